"""The cifar10 suite (bench/suites/cifar10.toml): it resolves at every fidelity (paper: on small files written in
CIFAR-10's real format), the smoke fidelity runs
the image path end to end with the classifier FID, and the published image tables are well formed."""

import bench  # noqa: F401  (binds our own `datasets` package first)

# isort: split
import math
import pickle

import numpy as np
import pytest

from bench import published
from bench.suite import load_suite, resolve_cells

ALGOS = ["pcd", "pcd_augment", "jarzynski_multinomial", "jarzynski_systematic", "ebm_noisy", "noise_free_euler",
         "self_adversarial", "coopflow_t30", "coopflow_t200", "coopflow_pre", "nt_ebm", "nce_ebm", "flowmc_ebm"]


def write_cifar(folder, per_class: int, test_per_class: int = 5, seed: int = 0):
    """CIFAR-10's python pickles (data_batch_1..5, test_batch) with random images, ``per_class`` of each class in
    the training split."""
    rng = np.random.default_rng(seed)
    sub = folder / "cifar-10-batches-py"
    sub.mkdir(parents=True)
    n = 10 * per_class
    labels = np.tile(np.arange(10), per_class)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(n), 5), start=1):
        with open(sub / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": data[part], b"labels": labels[part].tolist()}, f)
    with open(sub / "test_batch", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (10 * test_per_class, 3072), dtype=np.uint8),
                     b"labels": np.tile(np.arange(10), test_per_class).tolist()}, f)


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    import datasets.images as im

    write_cifar(tmp_path, per_class=200)
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    return tmp_path


def test_suite_resolves_smoke_and_quick_on_digits():
    s = load_suite("cifar10")
    for fid in ("smoke", "quick"):
        cells = resolve_cells(s, fid)
        assert sorted(c.algorithm for c in cells) == sorted(ALGOS)
        assert {c.target for c in cells} == {"digits8"} and {c.settings for c in cells} == {fid}
    quick = {c.algorithm: c for c in resolve_cells(s, "quick")}
    # 002's comparison differs in the noise only
    noisy, clean = quick["ebm_noisy"], quick["noise_free_euler"]
    assert noisy.algo.n_steps == clean.algo.n_steps and noisy.algo.step_size == clean.algo.step_size
    assert noisy.train.energy == clean.train.energy and noisy.algo.init == "normal"
    assert math.isclose(noisy.algo.noise_scale * math.sqrt(2 * noisy.algo.step_size), 0.1, rel_tol=1e-3)
    # 003 Table 1's first two rows differ in the augmentation of the chains only
    aug, plain = quick["pcd_augment"], quick["pcd"]
    assert (aug.algo.augment, plain.algo.augment) == ("du2021", "none") and aug.train == plain.train
    assert {k: v for k, v in vars(aug.algo).items() if k != "augment"} == {
        k: v for k, v in vars(plain.algo).items() if k != "augment"}
    assert quick["jarzynski_multinomial"].algo.resampling == "multinomial"
    assert quick["jarzynski_systematic"].algo.resampling == "systematic"
    assert [quick[f"coopflow_{k}"].algo.setting for k in ("t30", "t200", "pre")] == ["t30", "t200", "pre"]
    # CoopFlow Pre: the pre-trained flow learns at 004 A.2's 1e-4; at the quick 1e-3 it was wrecked within 25
    # updates after the warm-up (test log-likelihood -462, FID 460); from scratch (T=30, T=200) it keeps 1e-3
    pre = quick["coopflow_pre"].algo
    assert pre.flow_lr == 1e-4 and pre.lr == 1e-3
    assert all(quick[f"coopflow_{k}"].algo.flow_lr in (0.0, 1e-3) for k in ("t30", "t200"))


def test_paper_fidelity_on_real_format_files(cifar_dir, monkeypatch):
    """Resolving the paper fidelity reads the files; full CIFAR-10 has 5,000 images per class, these small files
    200, so the class-count check is replaced by reading the files alone."""
    import datasets.images as im
    from algorithms.energies import make_energy
    from algorithms.flows import flow_for
    from algorithms.image_flows import ImageFlow, n_parameters

    monkeypatch.setattr(im.CIFAR10, "check_data", lambda self: self.data())
    cells = {c.algorithm: c for c in resolve_cells(load_suite("cifar10"), "paper")}
    assert {c.target for c in cells.values()} == {"cifar10"}
    # the labelling rule (tests/test_settings_labels.py): no cell of this fidelity, all of whose networks run at the
    # papers' sizes here, claims "paper" while using a stand-in
    assert all(not c.deviations for c in cells.values() if c.settings == "paper")
    nt = cells["nt_ebm"]
    assert (nt.algo.sampler, nt.algo.n_steps, nt.algo.n_leapfrog, nt.algo.step_size) == ("hmc", 20, 3, 0.15)
    assert n_parameters(make_energy(nt.train.energy, 3072, (3, 32, 32))) == 429_249
    fm = cells["flowmc_ebm"]
    assert (fm.algo.n_particles, fm.algo.n_local, fm.algo.n_steps, fm.algo.energy_reg) == (128, 32, 99, 1e-4)
    # the flows the paper cells build: 001's Glow (18.9M), the Flow++ stand-in (27.5M), 000 C.6's RealNVP (4.0M)
    import torch

    data = torch.rand(4, 3072) * 2 - 1
    sizes = {a: n_parameters(flow_for(cells[a].algo, data, (3, 32, 32))) for a in ("nt_ebm", "coopflow_t30",
                                                                                 "flowmc_ebm")}
    assert sizes == {"nt_ebm": 18_926_688, "coopflow_t30": 27_529_920, "flowmc_ebm": 3_958_656}
    assert isinstance(flow_for(cells["nt_ebm"].algo, data, (3, 32, 32)), ImageFlow)


def test_smoke_runs_the_image_path_with_classifier_fid(tmp_path):
    """Three algorithms of the smoke fidelity on 8x8 digits: finished, with classifier FID / IS and sample grids."""
    from bench.api import plot, run

    res = run("cifar10", fidelity="smoke", algorithms=["nt_ebm", "noise_free_euler", "coopflow_pre"],
              out=tmp_path / "r", jobs=1)
    assert set(res["status"]) == {"ok"}
    fid = res[res.metric == "fid_classifier"].set_index("algorithm")["value"]
    assert set(fid.index) == {"nt_ebm", "noise_free_euler", "coopflow_pre"}
    assert np.isfinite(fid).all() and (fid >= 0).all()
    assert (res.metric == "is_classifier_mean").any()
    paths = plot(tmp_path / "r")
    assert any(p.name == "sample_grids.png" for p in paths)


def test_quick_target_on_small_cifar_files(cifar_dir, tmp_path):
    """cifar10_16: the quick fidelity's CIFAR-10 subset, down-sampled to 16x16, runs from real-format files."""
    import datasets

    t = datasets.get_target("cifar10_16")
    x = t.sample(8)
    assert x.shape == (8, 3 * 16 * 16) and x.min() >= -1 and x.max() <= 1
    assert t.test_set(20).shape == (20, 768)


def test_published_image_tables_well_formed():
    names = {t["name"]: t for t in published.PAPER_TABLES}
    for key in ("table1_003", "table1_002", "table1_004", "table1_001"):
        spec = names[key]
        assert all(len(v) == len(spec["columns"]) for v in spec["published"].values())
        assert len(spec.get("labels", spec["columns"])) == len(spec["columns"])
    assert names["table1_003"]["published"]["jarzynski_systematic"][:2] == [30.24, 6.97]
    assert names["table1_003"]["published"]["pcd_augment"][:2] == [36.43, 6.54]
    assert set(names["table1_003"]["published"]) <= set(ALGOS)
    assert names["table1_002"]["published"]["noise_free_euler"][0] == 61.6
