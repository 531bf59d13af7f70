"""The wiring that turns generated images into the numbers of the image tables, through the path a run uses
(``bench.runner.run_cell``: trace points, evaluation, result rows), with an algorithm stand-in whose samples and
weights are chosen here, so that the class weights and the FID ordering are known:

- weighted walkers count with their weights (003 §4.2): images of classes 2 / 3 / 6 in equal numbers, weighted
  0.1 / 0.3 / 0.6, give class weights 0.1 / 0.3 / 0.6 (unweighted they would be 1/3 each);
- FID against the held-out reference: the held-out images themselves score far lower than as many training images
  of the same classes, which score far lower than noise; images in [-1, 1] have no pixel out of range; every row
  carries its protocol (extractor, counts, the held-out split, the range);
- the FID reference is each held-out image once, raw pixels (on the data's grid), in the target's mix;
- 003's biased MNIST is digits 2, 3 and 6 with 5,600 / 2,800 / 1,400 images (on small files written here).

Each of these fails when one line of the wiring is wrong (the class weights dropping the walker weights,
sample_quality reading images as [0, 1], the reference taken from the training images, BiasedMNIST's classes
changed)."""

import bench  # noqa: F401  (binds our own `datasets` package first)

# isort: split
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import algorithms
import datasets
from algorithms.base import TrainingAlgorithm
from bench.runner import run_cell
from bench.suite import Cell, TrainConfig
from datasets import images as im
from metrics import classifier as C


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
        yield


@dataclass
class StandInConfig:
    weighted: bool = False


class StandIn(TrainingAlgorithm):
    """Learns nothing; its negatives are ``IMAGES`` (with normalised ``WEIGHTS`` when ``weighted``: drawn by their
    weights, as Jarzynski's walkers are), so every number measured of its samples is known."""

    name = "stand_in"
    Config = StandInConfig
    IMAGES: torch.Tensor = torch.zeros(0)
    WEIGHTS: torch.Tensor = torch.zeros(0)

    def step(self, x_pos):
        return {"loss": 0.0}

    def negatives(self):
        return self.IMAGES

    def negative_weights(self):
        return self.WEIGHTS if self.config.weighted else None

    def chain_starts(self, n):
        if self.config.weighted:
            return self.IMAGES[torch.multinomial(self.WEIGHTS.float(), n, replacement=True)]
        return self.IMAGES[torch.arange(n) % len(self.IMAGES)]

    def draw_negatives(self, n):
        return self.chain_starts(n)

    def run_chains(self, x0, n_draws):
        return x0[:, None].expand(-1, n_draws, -1)


def run(target: str, images, weights=None, n_negatives: int | None = None, ok: bool = True):
    """run_cell of the stand-in on ``target``: (result rows as {metric: row}, trace rows); ``ok``: it must finish."""
    StandIn.IMAGES = images.float()
    StandIn.WEIGHTS = torch.ones(len(images)) / len(images) if weights is None else weights.double()
    n = n_negatives or len(images)
    train = TrainConfig(energy="conv003_small", n_data=64, batch_size=8, n_iters=2, eval_every=1,
                        n_eval_samples=200, n_chains=0, n_negatives=n)
    cell = Cell("wiring", target, "stand_in", "quick", 0, train, StandInConfig(weighted=weights is not None),
                settings="quick")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(algorithms.ALGORITHMS, "stand_in", StandIn)
        rows, traces, _ = run_cell(cell)
    if ok:
        assert {r["status"] for r in rows} == {"ok"}, rows[0]["reason"]
    return {r["metric"]: r for r in rows}, traces


def _raw(d, x):
    return im.to_pixels(x, d.levels)


def test_weighted_walkers_give_their_weights_as_class_weights():
    """Known class weights through the run path: equal numbers of correctly classified images of classes 2, 3, 6,
    weighted 0.1 / 0.3 / 0.6 in total per class, read as 0.1 / 0.3 / 0.6, after training and at every trace point."""
    t = datasets.get_target("biased_digits8")
    d = t.data()
    clf = t.classifier()
    xs, ws = [], []
    for c, total in zip(t.classes, (0.1, 0.3, 0.6), strict=True):
        x = _raw(d, d.train_x[d.train_y == c])
        x = x[clf.predict_among(x, t.classes).numpy() == t.classes.index(c)][:40]  # labelled as their class
        assert len(x) == 40
        xs.append(x)
        ws.append(torch.full((40,), total / 40))
    rows, traces = run("biased_digits8", torch.cat(xs), torch.cat(ws))
    got = [rows[f"label_weight[{k}]"]["value"] for k in range(3)]
    np.testing.assert_allclose(got, [0.1, 0.3, 0.6], atol=1e-9)
    truth = np.array([4, 2, 1]) / 7
    np.testing.assert_allclose([rows[f"label_weight_relerr[{k}]"]["value"] for k in range(3)],
                               np.abs(np.array([0.1, 0.3, 0.6]) - truth) / truth, atol=1e-9)
    for it in (1, 2):
        point = {r["metric"]: r["value"] for r in traces if r["iteration"] == it}
        np.testing.assert_allclose([point[f"label_weight[{k}]"] for k in range(3)], [0.1, 0.3, 0.6], atol=1e-9)


@pytest.fixture(scope="module")
def fid_runs():
    """The stand-in on the 8x8 digits (10 classes), generating (a) every held-out image, (b) as many training images
    of the same classes, (c) uniform noise, each as raw pixels in [-1, 1]."""
    t = datasets.get_target("digits8")
    d = t.data()
    held = _raw(d, d.test_x)
    train = _raw(d, d.train_x[: len(held)])
    noise = torch.rand(len(held), 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {k: run("digits8", x) for k, x in (("held_out", held), ("train", train), ("noise", noise))}


def test_fid_orders_held_out_copies_before_training_images_before_noise(fid_runs):
    fid = {k: rows["fid_classifier"]["value"] for k, (rows, _) in fid_runs.items()}
    assert fid["held_out"] < 0.5 * fid["train"], fid  # the reference's own images (and 30 more) against others
    assert fid["train"] < 0.1 * fid["noise"], fid
    # the same ordering at every trace point (FID over training: the same reference, the images just drawn)
    for k, (_rows, traces) in fid_runs.items():
        along = [r["value"] for r in traces if r["metric"] == "fid_classifier"]
        assert len(along) == 2 and along == pytest.approx([fid[k]] * 2, rel=1e-6), k


def test_images_in_range_are_read_as_such_and_every_row_carries_its_protocol(fid_runs):
    rows, _ = fid_runs["held_out"]
    assert rows["out_of_range_frac"]["value"] == 0.0  # raw pixels in [-1, 1]: nothing clamped
    t = datasets.get_target("digits8")
    ref, split = t.reference_images()
    for m in ("fid_classifier", "is_classifier_mean", "is_classifier_std"):
        p = json.loads(rows[m]["protocol"])
        assert p["quality_reference_split"] == split == "test" and p["quality_value_range"] == [-1.0, 1.0]
        assert p["quality_n_ref"] == len(ref) == 330 and p["quality_n_gen"] == 360
        assert p["quality_extractor"].startswith("classifier-")
    assert rows["label_weight[0]"]["protocol"] == ""  # only sample-quality values have one
    # 000 Fig. 7's energy comparison is measured too
    assert 0 <= rows["energy_overlap"]["value"] <= 1 and rows["energy_std_ratio"]["value"] >= 0


def test_the_reference_is_each_held_out_image_once_on_the_pixel_grid():
    """Digits8: 330 distinct held-out images (33 of each digit, the held-out split's rarest class has 33), all on
    the 17-level grid 2 v / 16 - 1 (no dequantisation noise, no flips); in the target's mix for biased_digits8."""
    for name, n_ref, mix in (("digits8", 330, [33] * 10), ("biased_digits8", 61, [35, 17, 9])):
        t = datasets.get_target(name)
        ref, split = t.reference_images()
        assert split == "test" and ref.shape == (n_ref, 64)
        assert len(torch.unique(ref, dim=0)) == n_ref
        levels = (ref + 1) * 16 / 2
        assert torch.equal(levels, levels.round()) and ref.min() >= -1 and ref.max() <= 1
        idx = t.reference_indices()
        assert len(set(idx.tolist())) == n_ref
        d = t.data()
        assert np.bincount(d.test_y[idx], minlength=10)[list(t.classes)].tolist() == mix
        for c, m in zip(t.classes, mix, strict=True):  # the first of each class in the split's order
            np.testing.assert_array_equal(idx[d.test_y[idx] == c], np.flatnonzero(d.test_y == c)[:m])
        torch.testing.assert_close(ref, im.to_pixels(d.test_x[idx], 17))


def _split_coded_mnist(folder, counts_train: dict, counts_test: dict):
    """MNIST-format files in which image pixel (0, 0) says the split (0 train, 255 held out), pixel (0, 1) the label
    (25 x label) and pixels (0, 2), (0, 3) the image's index within its split (base 256)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, counts, flag in (("train", counts_train, 0), ("t10k", counts_test, 255)):
        y = np.concatenate([np.full(n, c, np.uint8) for c, n in counts.items()])
        y = y[np.random.default_rng(0).permutation(len(y))]
        x = np.zeros((len(y), 28, 28), np.uint8)
        x[:, 0, 0], x[:, 0, 1] = flag, 25 * y
        x[:, 0, 2], x[:, 0, 3] = np.arange(len(y)) // 256, np.arange(len(y)) % 256
        im.write_idx(folder / f"{split}-images-idx3-ubyte.gz", x)
        im.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    return folder


def test_biased_mnist_is_digits_2_3_6_and_its_reference_is_held_out(tmp_path, monkeypatch):
    """003 §4.2 on files written here: the training subset a run draws (``sample``) holds 5,600 / 2,800 / 1,400
    training images of digits 2, 3 and 6; the FID reference holds held-out images only, each once, in the 4:2:1 mix."""
    other = {c: 300 for c in (0, 1, 4, 5, 7, 8, 9)}
    _split_coded_mnist(tmp_path / "mnist", {2: 5700, 3: 2900, 6: 1500, **other}, {2: 40, 3: 40, 6: 40, **other})
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    t = datasets.get_target("biased_mnist")
    x = t.sample(9800, torch.Generator().manual_seed(0))
    code = np.round((x[:, :4].numpy() + 1) / 2 * 255).astype(int)
    assert (code[:, 0] == 0).all()  # training images
    labels = code[:, 1] // 25
    assert {c: int((labels == c).sum()) for c in np.unique(labels)} == {2: 5600, 3: 2800, 6: 1400}
    assert len(np.unique(code[:, 2] * 256 + code[:, 3])) == 9800  # each once
    ref, split = t.reference_images()
    code = np.round((ref[:, :4].numpy() + 1) / 2 * 255).astype(int)
    assert split == "test" and (code[:, 0] == 255).all()  # held-out images only
    assert np.bincount(code[:, 1] // 25, minlength=10)[[2, 3, 6]].tolist() == [40, 20, 10]
    assert len(np.unique(code[:, 2] * 256 + code[:, 3])) == len(ref) == 70



def test_non_finite_generated_images_are_a_diverged_run_not_a_crash():
    x = torch.zeros(20, 64)
    x[3, 5] = float("nan")
    rows, _ = run("digits8", x, ok=False)
    assert set(rows) == {"diverged_at"} and rows["diverged_at"]["status"] == "diverged"
    assert "non-finite pixels in the generated images" in rows["diverged_at"]["reason"]
