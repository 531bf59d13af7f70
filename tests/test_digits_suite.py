"""The digits suite (bench/suites/digits.toml): its smoke fidelity end to end, the conv energy, a learning check
on images, the MNIST-less paper fidelity's one-line error, and the image tables and figures."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bench
import datasets
from algorithms.conv_energies import Conv003, Conv003Small, image_shape
from algorithms.energies import make_energy
from bench.plots_images import image_grid
from metrics import classifier as C

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.CACHE_ENV, str(path))
        yield path


def test_conv003_sizes():
    assert sum(p.numel() for p in Conv003(784).parameters()) == 78_929  # 003 §4.2: "about 77K"
    assert sum(p.numel() for p in Conv003Small(64).parameters()) == 19_649
    assert image_shape(784) == (1, 28, 28) and image_shape(3072) == (3, 32, 32) and image_shape(64) == (1, 8, 8)
    with pytest.raises(ValueError, match="square images"):
        make_energy("conv003", 2)
    e = make_energy("conv003_small", 64)
    x = torch.randn(5, 64)
    assert e(x).shape == (5,)
    # the flattened convention: the energy of an image is that of its (C, H, W) reshaping, row by row
    torch.testing.assert_close(e(x)[2:3], e(x[2:3].reshape(1, 1, 8, 8).reshape(1, 64)))


def test_conv_energy_learns_digits_with_pcd(cache):
    """A tiny PCD run on the biased 8x8 digits: held-out digits end with lower energy than uniform noise images
    (the energy learned what a digit is), which an untrained energy does not do reliably."""
    from algorithms.base import Problem
    from algorithms.pcd import PCD, PCDConfig

    torch.manual_seed(0)
    t = datasets.get_target("biased_digits8")
    data = t.sample(245, torch.Generator().manual_seed(0))
    e = make_energy("conv003_small", 64)
    alg = PCD(Problem(t, data), e, PCDConfig(n_persistent=64, init="uniform", n_steps=5, step_size=0.01, lr=1e-3))
    perm = torch.randperm(245)
    for i in range(60):
        alg.step(data[perm[(i * 32) % 224:(i * 32) % 224 + 32]])
    with torch.no_grad():
        held, noise = e(t.test_set(200)).mean(), e(torch.rand(200, 64) * 2 - 1).mean()
    assert held < noise - 1.0


def test_smoke_suite_runs_and_reports(tmp_path, cache):
    out = tmp_path / "res"
    res = bench.run("digits", "smoke", out=out, jobs=1)
    ok = res[res["status"] == "ok"]
    assert set(ok["algorithm"]) == {"jarzynski", "pcd", "cd", "short_run", "noise_free_euler"}
    assert set(ok["target"]) == {"biased_digits8"}  # smoke and quick: the always-available target only
    for a in ok["algorithm"].unique():
        m = ok[ok["algorithm"] == a].set_index("metric")["value"]
        assert 0 <= m["label_weight_relerr_mean"] and 0.8 < m["classifier_accuracy"] <= 1
        np.testing.assert_allclose(sum(m[f"label_weight[{k}]"] for k in range(3)), 1.0)
        # sample quality after training, with its protocol (the held-out reference), and 000 Fig. 7's energies
        assert m["fid_classifier"] >= 0 and 0 <= m["energy_overlap"] <= 1
    fid = ok[ok["metric"] == "fid_classifier"]
    assert fid["protocol"].map(lambda p: json.loads(p)["quality_reference_split"]).eq("test").all()
    tr = pd.read_csv(out / "traces.csv")
    jz = tr[tr["algorithm"] == "jarzynski"]
    assert {"cross_entropy_estimate", "ess", "label_weight_relerr_mean", "fid_classifier"} <= set(jz["metric"])
    tables = bench.table(out)
    assert any(k.startswith("class_weights") for k in tables) and "sample_quality_protocols" in tables
    figs = bench.plot(out)
    assert {"sample_grids.png", "image_training.png", "fid_over_training.png", "energy_histograms.png"} <= {
        Path(f).name for f in figs}


def test_paper_fidelity_without_mnist_is_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "EBM_BENCH_DATA": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    (tmp_path / "empty").mkdir()
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "digits", "--fidelity", "paper",
                        "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--data-dir" in lines[0] and "EBM_BENCH_DATA" in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "digits", "--data-dir",
                        str(tmp_path / "nope"), "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no such folder" in p.stderr and not (tmp_path / "out").exists()
    # a truncated MNIST file given by --data-dir: one line naming it, before anything runs
    from datasets.images import write_idx

    mn = tmp_path / "data" / "mnist"
    mn.mkdir(parents=True)
    for split in ("train", "t10k"):
        write_idx(mn / f"{split}-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8))
        write_idx(mn / f"{split}-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    bad = mn / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-100]))
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "digits", "--fidelity", "paper", "--data-dir",
                        str(tmp_path / "data"), "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and str(bad) in lines[0] and "truncated" in lines[0]
    assert not (tmp_path / "out").exists()


def test_image_grid_tiles():
    x = np.stack([np.full(4, v) for v in (-1.0, 0.0, 1.0, 0.5)])  # four 1 x 2 x 2 images
    g = image_grid(x, (1, 2, 2))
    assert g.shape == (5, 5)
    np.testing.assert_allclose([g[0, 0], g[0, 3], g[3, 0], g[3, 3]], [0.0, 0.5, 1.0, 0.75])
    np.testing.assert_allclose(g[2, :], 1.0)  # the gap row


def test_learning_rate_decays_linearly(monkeypatch, cache):
    """lr_final_ratio r: the k-th of K steps uses lr (1 - (1 - r) k / K), k = 0..K-1 (003 B.2: 1e-4 to 1e-10)."""
    import dataclasses

    import algorithms.contrastive as contrastive
    from bench.runner import run_cell
    from bench.suite import load_suite, resolve_cells

    seen = []
    real = contrastive.contrastive_update

    def spy(energy, optimizer, *args):
        seen.append(optimizer.param_groups[0]["lr"])
        return real(energy, optimizer, *args)

    monkeypatch.setattr(contrastive, "contrastive_update", spy)
    cell = resolve_cells(load_suite("digits"), "smoke", ["pcd"], ["biased_digits8"], seeds=1)[0]
    cell.train = dataclasses.replace(cell.train, lr_final_ratio=0.5, eval_every=0)
    cell.algo = dataclasses.replace(cell.algo, lr=1e-3)
    run_cell(cell)
    np.testing.assert_allclose(seen[:4], [1e-3, 0.875e-3, 0.75e-3, 0.625e-3])
