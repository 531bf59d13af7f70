"""Image data without downloads (datasets/images.py): the IDX and CIFAR-10 readers on small files written in
each real format (and broken ones), where the data folder is found, and the class-imbalanced targets."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

import datasets
from datasets import images as im


def _fake_mnist(folder, n_train=60, n_test=30, gz=True, side=28, seed=0):
    """Small MNIST-format files: labels cycle 0..9; image i is filled with (17 * label + i) % 256."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = ((17 * y[:, None, None] + np.arange(n)[:, None, None]) % 256 * np.ones((1, side, side))).astype(np.uint8)
        im.write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", x)
        im.write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", y)
    return folder


# ---- IDX -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    im.write_idx(tmp_path / name, a)
    raw = (tmp_path / name).read_bytes()
    if name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert raw[:4] == b"\x00\x00\x08\x03" and struct.unpack(">3I", raw[4:16]) == (2, 3, 4)  # the real header
    np.testing.assert_array_equal(im.read_idx(tmp_path / name), a)


def test_idx_reads_a_hand_written_label_file(tmp_path):
    (tmp_path / "l").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([7, 2, 1]))
    np.testing.assert_array_equal(im.read_idx(tmp_path / "l"), [7, 2, 1])


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_is_one_line_naming_the_file(tmp_path, gz):
    path = tmp_path / ("x.gz" if gz else "x")
    blob = b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 4, 4) + bytes(5 * 16 - 3)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(im.DataError) as e:
        im.read_idx(path)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 2, 2) + bytes(4))  # 0x0d: float data
    with pytest.raises(im.DataError, match=r"magic number 0x00000d03"):
        im.read_idx(path)
    path.write_bytes(b"PK\x03\x04" + bytes(20))  # a zip file
    with pytest.raises(im.DataError, match=str(path)):
        im.read_idx(path)


def test_corrupt_gzip_and_missing_file(tmp_path):
    path = tmp_path / "c.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 100) + bytes(100))[:30])
    with pytest.raises(im.DataError, match="gzip"):
        im.read_idx(path)
    with pytest.raises(im.DataError, match="no such file"):
        im.read_idx(tmp_path / "absent")


# ---- CIFAR-10 ---------------------------------------------------------------------------------------------
def _cifar_batch(path, n=6):
    data = (np.arange(n * 3072) % 251).astype(np.uint8).reshape(n, 3072)
    labels = [i % 10 for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a"] * n}, f, protocol=2)
    return data, labels


def test_cifar_batch_round_trip(tmp_path):
    data, labels = _cifar_batch(tmp_path / "data_batch_1")
    x, y = im.read_cifar_batch(tmp_path / "data_batch_1")
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x.reshape(6, -1), data)  # CIFAR's rows are R, G, B planes: C, H, W order
    np.testing.assert_array_equal(y, labels)


def test_cifar_truncated_and_foreign_pickles(tmp_path):
    _cifar_batch(tmp_path / "b")
    raw = (tmp_path / "b").read_bytes()
    (tmp_path / "t").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(im.DataError, match="not a CIFAR-10 python batch"):
        im.read_cifar_batch(tmp_path / "t")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "e").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(im.DataError, match="refusing to load"):
        im.read_cifar_batch(tmp_path / "e")
    with open(tmp_path / "w", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(im.DataError, match=r"\(n, 3072\)"):
        im.read_cifar_batch(tmp_path / "w")


def test_load_cifar10_folder(tmp_path, monkeypatch):
    sub = tmp_path / "cifar-10-batches-py"
    sub.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _cifar_batch(sub / name, n=4)
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    d = im.load_dataset("cifar10")
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32) and d.shape == (3, 32, 32)


# ---- where the data is -------------------------------------------------------------------------------------
def test_mnist_found_in_the_data_folder(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "mnist", gz=False)
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    d = im.load_dataset("mnist")
    assert d.train_x.shape == (60, 1, 28, 28) and d.test_x.shape == (30, 1, 28, 28) and d.levels == 256
    np.testing.assert_array_equal(d.train_y[:12], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])


def test_fashion_found_beside_debian_location(tmp_path, monkeypatch):
    monkeypatch.setattr(im, "FASHION_SYSTEM_DIR", _fake_mnist(tmp_path / "system"))
    monkeypatch.delenv(im.DATA_ENV, raising=False)
    monkeypatch.setattr(im, "_LOADED", {})
    assert im.load_dataset("fashion_mnist").source == str(tmp_path / "system")


def test_missing_mnist_says_how_to_give_it(tmp_path, monkeypatch):
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    with pytest.raises(im.DataError) as e:
        im.load_dataset("mnist")
    assert "--data-dir" in str(e.value) and im.DATA_ENV in str(e.value) and "\n" not in str(e.value)


def test_missing_label_file_is_named(tmp_path, monkeypatch):
    folder = _fake_mnist(tmp_path / "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    with pytest.raises(im.DataError, match="t10k-labels-idx1-ubyte"):
        im.load_dataset("mnist")


# ---- the imbalanced targets ----------------------------------------------------------------------------------
def test_to_pixels_range():
    v = np.array([[0, 8, 16]], dtype=np.uint8)
    np.testing.assert_allclose(im.to_pixels(v, 17).numpy(), [[-1.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    x = im.to_pixels(np.tile(v, (1000, 1)), 17, dequantize=True, generator=g)
    assert x.min() >= -1 and x.max() < 1
    # dequantised level v spreads uniformly over [2v/17 - 1, 2(v+1)/17 - 1)
    np.testing.assert_allclose(x[:, 0].mean().item(), -1 + 1 / 17, atol=0.01)


def test_biased_subset_takes_the_first_of_each_class(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "mnist", n_train=100)
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    t = im.BiasedImages("mnist", classes=(2, 3, 6), counts=(4, 2, 1), shape=(1, 28, 28), name="tiny")
    imgs, modes = t.subset()
    # class 2 sits at indices 2, 12, 22, ...: the first four of them, then the first two 3s, the first 6
    first = [2, 12, 22, 32, 3, 13, 6]
    np.testing.assert_array_equal(imgs[:, 0, 0, 0], [(17 * (i % 10) + i) % 256 for i in first])
    np.testing.assert_array_equal(modes, [0, 0, 0, 0, 1, 1, 2])
    np.testing.assert_allclose(t.mode_weights.numpy(), [4 / 7, 2 / 7, 1 / 7])
    x = t.sample(7, torch.Generator().manual_seed(1))
    assert x.shape == (7, 784) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    # n = the subset size: every image exactly once, in a random order
    got = sorted(np.round((x[:, 0].numpy() + 1) / 2 * 255).astype(int).tolist())
    assert got == sorted((17 * (i % 10) + i) % 256 for i in first)
    too_many = im.BiasedImages("mnist", classes=(2,), counts=(50,), shape=(1, 28, 28), name="too_many")
    with pytest.raises(im.DataError, match="has 10 images of class 2"):
        too_many.check_data()


def test_test_set_has_the_targets_mix(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "mnist", n_test=100)
    monkeypatch.setenv(im.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(im, "_LOADED", {})
    t = im.BiasedImages("mnist", classes=(2, 3, 6), counts=(4, 2, 1), shape=(1, 28, 28), name="tiny")
    x, k = t.test_labels_and_images(700)
    assert np.bincount(k).tolist() == [400, 200, 100]
    # every image comes from the held-out split (index i: value (17 * label + i) % 256 with i >= 0 in t10k)
    labels = np.array(t.classes)[k]
    held = {(17 * (i % 10) + i) % 256 for i in range(100)}
    vals = np.round((x[:, 0].numpy() + 1) / 2 * 255).astype(int)
    assert set(vals) <= held and len(labels) == 700
    # each class's 10 held-out images in turn, every one once before any repeats: each drawn equally often
    for j, m in enumerate([400, 200, 100]):
        _, times = np.unique(vals[k == j], return_counts=True)
        assert times.tolist() == [m // 10] * 10
    np.testing.assert_array_equal(t.test_set(700), x)  # fixed


def test_registered_image_targets():
    for name, dim, w in (("biased_digits8", 64, [4 / 7, 2 / 7, 1 / 7]), ("biased_mnist", 784, [4 / 7, 2 / 7, 1 / 7]),
                         ("biased_fashion_mnist", 784, [4 / 7, 2 / 7, 1 / 7])):
        t = datasets.get_target(name)  # no file is read to build a target
        assert t.dim == dim and t.shape[1] * t.shape[2] == dim and t.n_modes == 3 and t.version
        np.testing.assert_allclose(t.mode_weights.numpy(), w)
    d = datasets.get_target("biased_digits8")
    x = d.sample(245, torch.Generator().manual_seed(0))
    assert x.shape == (245, 64) and -1 <= x.min() and x.max() < 1
    assert datasets.get_target("biased_mnist").counts == (5600, 2800, 1400)


def test_hflip_mirrors_rows():
    x = torch.arange(8.0).reshape(1, 8)  # one 1 x 2 x 4 image
    out = im.hflip(x, (1, 2, 4), torch.tensor([True]))
    np.testing.assert_array_equal(out.numpy(), [[3, 2, 1, 0, 7, 6, 5, 4]])


# ---- the data folder as a parameter of a run and of a suite file ---------------------------------------------
TINY_SUITE = """
targets = ["tiny_mnist"]
algorithms = ["pcd"]
{data_dir}
[plugins.targets]
tiny_mnist = {{ ref = "datasets.images:BiasedImages", dataset = "mnist", classes = [2, 3, 6], counts = [4, 2, 1] }}
[fidelity.smoke]
[fidelity.smoke.defaults]
energy = "conv003_small"
n_data = 7
batch_size = 7
n_iters = 2
n_eval_samples = 14
n_chains = 0
n_negatives = 8
n_persistent = 8
n_steps = 1
"""


@pytest.mark.parametrize("how", ["argument", "suite file"])
def test_the_data_folder_is_a_parameter_of_the_run_and_of_the_suite_file(how, tmp_path, monkeypatch):
    """No environment variable: bench.run(data_dir=...) or the suite file's data_dir (relative to the file) gives
    the folder; the cells read their files from it (in whatever process runs them) and record nothing of it."""
    import bench
    from bench import plugins, registry
    from bench.errors import BenchError
    from metrics import classifier

    monkeypatch.delenv(im.DATA_ENV, raising=False)
    monkeypatch.setattr(im, "_LOADED", {})
    monkeypatch.setattr(datasets, "TARGETS", dict(datasets.TARGETS))
    monkeypatch.setattr(registry, "ORIGINS", dict(registry.ORIGINS))
    monkeypatch.setattr(plugins, "SPECS", {})
    monkeypatch.setenv(classifier.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(im, "_DATA_DIR", None)
    _fake_mnist(tmp_path / "files" / "mnist", side=8)  # 8x8: the BiasedImages default shape
    line = 'data_dir = "files"' if how == "suite file" else ""
    (tmp_path / "tiny.toml").write_text(TINY_SUITE.format(data_dir=line))
    kw = {"data_dir": tmp_path / "files"} if how == "argument" else {}
    with pytest.raises(BenchError, match="no such folder"):
        bench.run(str(tmp_path / "tiny.toml"), "smoke", out=tmp_path / "out", data_dir=tmp_path / "nowhere")
    res = bench.run(str(tmp_path / "tiny.toml"), "smoke", out=tmp_path / "out", jobs=1, **kw)
    assert (res["status"] == "ok").all() and "label_weight[0]" in set(res["metric"])
    assert str(tmp_path / "files") not in res["config"].iloc[0]
