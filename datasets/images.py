"""Image data without downloads, and the class-imbalanced image targets (003 §4.2: "biased MNIST").

The image convention (every image target, sampler, algorithm and metric of the suite relies on it):

* a target samples **flattened** float32 tensors of shape ``(n, C*H*W)``, flattened in C, H, W order (what
  ``x.reshape(n, -1)`` does to an ``(n, C, H, W)`` batch); ``target.shape`` is ``(C, H, W)``;
* pixels lie in [-1, 1] (``2 v / (L - 1) - 1`` for integer levels v in 0..L-1; with dequantisation
  ``2 (v + u) / L - 1``, u ~ U[0, 1), so [-1, 1));
* convolutional energies (``algorithms/conv_energies.py``) and classifiers (``metrics/classifier.py``) reshape
  ``x.view(-1, *shape)`` themselves, so samplers and training algorithms work on images unchanged.

Data is never downloaded. It comes from files the user already has:

* MNIST-format IDX files (MNIST, Fashion-MNIST), gzipped or not: ``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``;
* CIFAR-10's python pickle batches (``cifar-10-batches-py/data_batch_1`` ...; ``read_cifar_batch``), read by
  a restricted unpickler that builds numpy arrays and nothing else;
* scikit-learn's bundled 8x8 digits (1,797 images, 17 grey levels), always installed with scikit-learn.

Where the files are: the folder given to ``use_data_dir`` (which ``bench.run(data_dir=...)``, a suite file's
``data_dir`` and ``python -m bench run --data-dir DIR`` call, in each process that runs a cell), else the
environment variable ``EBM_BENCH_DATA``. MNIST is looked for in ``DIR/mnist`` then ``DIR``;
Fashion-MNIST in ``DIR/fashion-mnist``, ``DIR`` and Debian's ``/usr/share/datasets/fashion-mnist`` (package
``dataset-fashion-mnist``); CIFAR-10 in ``DIR/cifar-10-batches-py`` then ``DIR``. A missing, truncated or
corrupt file raises ``DataError`` with one line naming the file and what is wrong (the CLI prints it and exits
with status 2 before anything runs).

Splits. MNIST-format data: the files' own training and t10k splits. 8x8 digits: the first 1,437 images are
the training split and the last 360 the held-out split (a fixed rule of this suite; sklearn's order).

The imbalanced targets (``BiasedImages``): 003 §4.2 takes, from the training split, 5,600 images of digit 2,
2,800 of digit 3 and 1,400 of digit 6 (the first of each class), so the mode weights are 4/7, 2/7, 1/7 exactly.
The family takes any classes and counts. Mode k is class ``classes[k]``; ``assign`` labels images with the
suite's classifier (``metrics/classifier.py``), restricted to the target's classes. ``sample(n)`` returns the
training subset in a random order (cycled when n exceeds it: the runner's ``n_data`` is the subset size), each
image freshly dequantised / flipped when those options are on. ``test_set(n)`` draws held-out images of the
target's classes in the target's mix (largest-remainder counts), with a fixed seed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datasets.base import Target

#: environment variable naming the data folder (``--data-dir`` sets it)
DATA_ENV = "EBM_BENCH_DATA"
#: where Debian's dataset-fashion-mnist package installs the IDX files
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataError(ValueError):
    """A data file is missing, truncated or corrupt: the message is one line naming the file."""


# ---------------------------------------------------------------------------------------------------------
# IDX (MNIST format)
def _read_bytes(path: Path) -> bytes:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from None
    return raw


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format; gzipped or not, recognised by its content) as an uint8 array.

    Header: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, then each dimension as
    a big-endian uint32; the data follows. Labels have magic 0x00000801, images 0x00000803."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = raw[3]
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic number 0x{magic:08x}, expected "
                        "0x00000801 for labels or 0x00000803 for images)")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {head})")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    size = math.prod(dims)
    if len(raw) != head + size:
        what = "truncated" if len(raw) < head + size else "corrupt"
        raise DataError(f"{path}: {what} IDX file ({len(raw) - head} data bytes, header {dims} says {size})")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def write_idx(path, array: np.ndarray) -> None:
    """Write an uint8 array as an IDX file (gzipped when the name ends in .gz): tests and users' own data."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


def find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder / stem}: no such file (nor {stem}.gz)")


# ---------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches
class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, strings, numbers and numpy arrays; refuses any other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 (n, 3, 32, 32) and labels int64 (n,)."""
    path = Path(path)
    raw = _read_bytes(path)
    try:
        d = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{path}: not a CIFAR-10 python batch (no 'data' and 'labels' entries)")
    data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"{path}: CIFAR-10 'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{path}: CIFAR-10 'labels' must be {data.shape[0]} integers in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
@dataclass
class LabelledImages:
    """A labelled image data set with its fixed train / held-out split: uint8 images (n, C, H, W) in 0..levels-1."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    levels: int = 256
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def data_hash(self) -> str:
        """sha1 of the arrays and the number of levels (computed once: the classifier's cache key uses it)."""
        if getattr(self, "_hash", None) is None:
            self._hash = self._compute_hash()
        return self._hash

    def _compute_hash(self) -> str:
        h = hashlib.sha1()
        for a in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(self.levels).encode())
        return h.hexdigest()[:16]


#: the data folder given by the caller (use_data_dir); None: the environment variable's
_DATA_DIR: Path | None = None


def use_data_dir(folder) -> None:
    """Read image data from ``folder`` (None: from ``EBM_BENCH_DATA`` again)."""
    global _DATA_DIR
    _DATA_DIR = None if folder is None else Path(folder).expanduser()


def data_dir() -> Path | None:
    """The data folder: the one given to ``use_data_dir``, else ``EBM_BENCH_DATA``, else None."""
    if _DATA_DIR is not None:
        return _DATA_DIR
    v = os.environ.get(DATA_ENV, "").strip()
    return Path(v).expanduser() if v else None


def _mnist_folder(kind: str) -> Path:
    """The first candidate folder holding the training images of ``kind`` (mnist | fashion-mnist)."""
    root = data_dir()
    cands = ([root / kind, root] if root else []) + ([FASHION_SYSTEM_DIR] if kind == "fashion-mnist" else [])
    for c in cands:
        if any((c / (IDX_FILES["train_images"] + s)).is_file() for s in ("", ".gz")):
            return c
    where = f"looked in {', '.join(str(c) for c in cands)}" if cands else "no data folder given"
    raise DataError(f"{kind}: no {IDX_FILES['train_images']}[.gz] found ({where}); give the folder of "
                    f"its IDX files with --data-dir DIR or {DATA_ENV}=DIR (files in DIR/{kind} or DIR)")


def load_mnist_format(folder, name: str = "mnist") -> LabelledImages:
    folder = Path(folder)
    arrays = {k: read_idx(find_idx(folder, stem)) for k, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
    return LabelledImages(name, arrays["train_images"][:, None], arrays["train_labels"].astype(np.int64),
                          arrays["test_images"][:, None], arrays["test_labels"].astype(np.int64), 256, str(folder))


def load_cifar10(folder) -> LabelledImages:
    folder = Path(folder)
    parts = [read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    tx, ty = read_cifar_batch(folder / "test_batch")
    return LabelledImages("cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                          tx, ty, 256, str(folder))


def load_digits8() -> LabelledImages:
    """scikit-learn's bundled 8x8 digits: 17 grey levels (0..16); first 1,437 train, last 360 held out."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    return LabelledImages("digits8", x[:1437], y[:1437], x[1437:], y[1437:], 17, "sklearn.datasets.load_digits")


_LOADED: dict[tuple, LabelledImages] = {}


def load_dataset(name: str) -> LabelledImages:
    """A labelled data set by name (digits8 | mnist | fashion_mnist | cifar10), read once per process."""
    if name == "digits8":
        key = (name,)
    elif name in ("mnist", "fashion_mnist"):
        key = (name, str(_mnist_folder(name.replace("_", "-"))))
    elif name == "cifar10":
        root = data_dir()
        if root is None:
            raise DataError(f"cifar10: no data folder; give it with --data-dir DIR or {DATA_ENV}=DIR "
                            "(files in DIR/cifar-10-batches-py or DIR)")
        sub = root / "cifar-10-batches-py"
        key = (name, str(sub if sub.is_dir() else root))
    else:
        raise DataError(f"unknown image data set {name!r}; valid: digits8, mnist, fashion_mnist, cifar10")
    if key not in _LOADED:
        if name == "digits8":
            _LOADED[key] = load_digits8()
        elif name == "cifar10":
            _LOADED[key] = load_cifar10(Path(key[1]))
        else:
            _LOADED[key] = load_mnist_format(Path(key[1]), name)
    return _LOADED[key]


def to_pixels(images: np.ndarray | Tensor, levels: int, dequantize: bool = False,
              generator: torch.Generator | None = None) -> Tensor:
    """uint8 levels 0..L-1, shape (n, C, H, W) -> flattened float32 pixels in [-1, 1] (module docstring)."""
    v = torch.as_tensor(np.asarray(images)).to(torch.float32).reshape(len(images), -1)
    if dequantize:
        return 2 * (v + torch.rand(v.shape, generator=generator)) / levels - 1
    return 2 * v / (levels - 1) - 1


def _largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n in proportion to ``weights`` (largest-remainder rounding)."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    per = np.floor(w * n).astype(int)
    per[np.argsort(-(w * n - per), kind="stable")[: n - per.sum()]] += 1
    return per


def hflip(x: Tensor, shape, mask: Tensor) -> Tensor:
    """Mirror the flattened images x[mask] left-right."""
    imgs = x.view(-1, *shape).clone()
    imgs[mask] = imgs[mask].flip(-1)
    return imgs.reshape(x.shape[0], -1)


class BiasedImages(Target):
    """A class-imbalanced subset of a labelled image data set (003 §4.2): ``counts[k]`` images of class
    ``classes[k]`` (the first of each class in the training split), so mode k has weight counts[k] / sum(counts)
    exactly. Pixels in [-1, 1]; ``dequantize``: uniform dequantisation; ``flip``: random left-right flips."""

    paper = "003 §4.2"
    has_density = False
    #: the data set behind the target (load_dataset)
    dataset = "digits8"
    #: capability "sample_quality": the evaluation computes FID / IS of generated images against
    #: ``reference_images`` (classifier features, and Inception with a weights file), after training and along it
    sample_quality = True

    def __init__(self, dataset: str = "digits8", classes=(2, 3, 6), counts=(140, 70, 35), dequantize=False,
                 flip=False, shape=(1, 8, 8), name: str | None = None):
        if len(classes) != len(counts) or len(set(classes)) != len(classes) or min(counts) < 1:
            raise ValueError("classes must be distinct and counts positive, one count per class")
        self.dataset, self.classes, self.counts = dataset, tuple(classes), tuple(int(c) for c in counts)
        self.dequantize, self.flip = dequantize, flip
        self.shape = tuple(shape)  # known without reading the data, so a suite resolves before any file is read
        self.dim = math.prod(self.shape)
        self.box = ((-1.0, 1.0),) * self.dim
        if name:
            self.name = name
        self._subset = None

    # ---- data -----------------------------------------------------------------------------------------
    def data(self) -> LabelledImages:
        return load_dataset(self.dataset)

    def check_data(self) -> None:
        """Read and check the files now (raises DataError): called before any cell runs."""
        self.subset()

    def subset(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, mode index) of the imbalanced training subset, classes in order."""
        if self._subset is None:
            d = self.data()
            if d.shape != self.shape:
                raise DataError(f"{d.source}: images of shape {d.shape}, target {self.name} expects {self.shape}")
            xs, ks = [], []
            for k, (c, n) in enumerate(zip(self.classes, self.counts, strict=True)):
                idx = np.flatnonzero(d.train_y == c)[:n]
                if len(idx) < n:
                    raise DataError(f"{d.source}: the training split has {len(idx)} images of class {c}, "
                                    f"target {self.name} takes {n}")
                xs.append(d.train_x[idx])
                ks.append(np.full(n, k))
            self._subset = (np.concatenate(xs), np.concatenate(ks))
        return self._subset

    def _pixels(self, images, generator):
        x = to_pixels(images, self.data().levels, self.dequantize, generator)
        if self.flip:
            x = hflip(x, self.shape, torch.rand(len(x), generator=generator) < 0.5)
        return x

    # ---- the Target contract -------------------------------------------------------------------------------
    def sample(self, n, generator=None):
        """The training subset in a random order (cycled past its size), dequantised / flipped afresh."""
        imgs, _ = self.subset()
        m = len(imgs)
        idx = torch.cat([torch.randperm(m, generator=generator) for _ in range(-(-n // m))])[:n]
        return self._pixels(imgs[idx.numpy()], generator)

    def test_labels_and_images(self, n: int) -> tuple[Tensor, np.ndarray]:
        """n held-out samples of p*: images of the target's classes from the held-out split in its mix
        (largest-remainder counts), processed as the training images are (dequantised / flipped when those options
        are on, so that they are samples of the same density); and their mode indices. Each class's held-out
        images are taken in a fixed random order, every one once before any repeats (``n`` may exceed the pool)."""
        d = self.data()
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.name}/{self.version}/test".encode()))
        per = _largest_remainder(np.asarray(self.counts, dtype=float), n)
        xs, ks = [], []
        for k, (c, m) in enumerate(zip(self.classes, per, strict=True)):
            pool = np.flatnonzero(d.test_y == c)
            if len(pool) == 0:
                raise DataError(f"{d.source}: the held-out split has no image of class {c}")
            order = torch.cat([torch.randperm(len(pool), generator=g) for _ in range(-(-int(m) // len(pool)))])
            xs.append(d.test_x[pool[order[: int(m)].numpy()]])
            ks.append(np.full(int(m), k))
        return self._pixels(np.concatenate(xs), g), np.concatenate(ks)

    def test_set(self, n: int = 10_000) -> Tensor:
        return self.test_labels_and_images(n)[0]

    #: the split the FID reference comes from (``reference_images``)
    reference_split = "test"

    def reference_indices(self) -> np.ndarray:
        """Indices into the held-out split of the FID reference (``reference_images``): the largest set of held-out
        images of the target's classes whose class counts follow the target's mix (largest-remainder counts of
        the largest total every class can supply), the first of each class in the split's order, each once. For
        a balanced target whose held-out split is balanced (CIFAR-10: 1,000 per class) that is the whole split."""
        d = self.data()
        w = np.asarray(self.counts, dtype=float) / sum(self.counts)
        pools = [np.flatnonzero(d.test_y == c) for c in self.classes]
        for c, pool in zip(self.classes, pools, strict=True):
            if len(pool) == 0:
                raise DataError(f"{d.source}: the held-out split has no image of class {c}")
        total = int(min(len(p) / wk for p, wk in zip(pools, w, strict=True)) + 1e-9)
        while True:  # the largest total whose rounded class counts every class can supply
            per = _largest_remainder(w, total)
            if all(m <= len(p) for m, p in zip(per, pools, strict=True)):
                break
            total -= 1
        return np.concatenate([p[:m] for p, m in zip(pools, per, strict=True)])

    def reference_images(self) -> tuple[Tensor, str]:
        """The FID reference (README "Sample quality"): the held-out images of ``reference_indices``, each once, as
        raw pixels ``2 v / (L - 1) - 1`` (no dequantisation noise, no flips), and the split they come from."""
        d = self.data()
        return to_pixels(d.test_x[self.reference_indices()], d.levels), self.reference_split

    @property
    def n_modes(self) -> int:
        return len(self.classes)

    @property
    def mode_weights(self) -> Tensor:
        c = torch.tensor(self.counts, dtype=torch.float64)
        return c / c.sum()

    def classifier(self):
        from metrics.classifier import get_classifier

        return get_classifier(self.data())

    def assign(self, x: Tensor) -> Tensor:
        """Mode of each image: the suite's classifier's most likely class among the target's classes."""
        return self.classifier().predict_among(x, self.classes)

    def off_class(self, x: Tensor) -> Tensor:
        """True for each image whose most likely class (among all the classifier knows) is not one of the
        target's (``off_class_share``, metrics/catalogue.py)."""
        return torch.as_tensor(~np.isin(self.classifier().predict(x).numpy(), self.classes))

    def describe(self) -> dict:
        return {**super().describe(), "dataset": self.dataset, "classes": list(self.classes),
                "counts": list(self.counts), "shape": list(self.shape)}


class BiasedDigits8(BiasedImages):
    """The 003 §4.2 recipe on scikit-learn's 8x8 digits (always available; the CI default): digits 2/3/6 with
    140/70/35 training images (weights 4/7, 2/7, 1/7), uniformly dequantised (17 grey levels: this suite's
    choice, so the data has a density)."""

    name = "biased_digits8"
    paper = "003 §4.2 recipe on sklearn's 8x8 digits (this suite's)"
    version = "1"

    def __init__(self):
        super().__init__("digits8", (2, 3, 6), (140, 70, 35), dequantize=True, shape=(1, 8, 8))


class BiasedMNIST(BiasedImages):
    """003 §4.2: MNIST digits 2/3/6 with 5,600/2,800/1,400 images (the first of each class in the training
    split), pixels in [-1, 1], no dequantisation (003 states none). Needs MNIST's IDX files (--data-dir)."""

    name = "biased_mnist"
    version = "1"

    def __init__(self):
        super().__init__("mnist", (2, 3, 6), (5600, 2800, 1400), shape=(1, 28, 28))


class BiasedFashionMNIST(BiasedImages):
    """The 003 §4.2 recipe on Fashion-MNIST: trouser (1), sneaker (7) and bag (8), 5,600/2,800/1,400 images
    (three classes the eye and a classifier tell apart; the choice is this suite's)."""

    name = "biased_fashion_mnist"
    paper = "003 §4.2 recipe on Fashion-MNIST (this suite's)"
    version = "1"

    def __init__(self):
        super().__init__("fashion_mnist", (1, 7, 8), (5600, 2800, 1400), shape=(1, 28, 28))


# ---------------------------------------------------------------------------------------------------------
# Balanced image targets of the cifar10 suite (issue 13: 001, 002, 003 §4.3, 004 and 000 C.6 on CIFAR-10), with
# an always-available stand-in (the 8x8 digits) so CI runs the whole image path.
class Digits8(BiasedImages):
    """All ten classes of scikit-learn's 8x8 digits, 140 training images each (balanced), uniformly dequantised:
    the always-available stand-in for CIFAR-10 in the cifar10 suite."""

    name = "digits8"
    paper = "stand-in for CIFAR-10 (this suite's)"
    version = "1"

    def __init__(self):
        super().__init__("digits8", tuple(range(10)), (140,) * 10, dequantize=True, shape=(1, 8, 8))


class CIFAR10(BiasedImages):
    """CIFAR-10 (user-supplied python pickles): all 50,000 training images, 5,000 per class, uniformly dequantised
    (000 C.6) and randomly flipped left-right (000 C.6, 004 A.2), pixels in [-1, 1]."""

    name = "cifar10"
    paper = "001 / 002 / 003 / 004 Table 1, 000 C.6"
    version = "1"

    def __init__(self):
        super().__init__("cifar10", tuple(range(10)), (5000,) * 10, dequantize=True, flip=True, shape=(3, 32, 32))


def downsample2(d: LabelledImages) -> LabelledImages:
    """2x2 average pooling of a labelled image set: (C, H, W) -> (C, H/2, W/2); pixel values stay on the 0..levels-1
    scale (no longer integers)."""
    def pool(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).astype(np.float32).mean((3, 5))
    return LabelledImages(d.name + "_16", pool(d.train_x), d.train_y, pool(d.test_x), d.test_y, d.levels,
                          d.source + " (2x2 average pooled)")


class CIFAR10Small(CIFAR10):
    """The quick fidelity's CIFAR-10: the first 200 training images of each class (2,000), down-sampled to 16x16 by
    2x2 average pooling; dequantised and flipped as ``CIFAR10``. The classifier reads the same down-sampled set."""

    name = "cifar10_16"
    paper = "CIFAR-10 subset at 16x16 (this suite's quick setting)"
    version = "1"

    def __init__(self):
        BiasedImages.__init__(self, "cifar10", tuple(range(10)), (200,) * 10, dequantize=True, flip=True,
                              shape=(3, 16, 16))
        self._small = None

    def data(self) -> LabelledImages:
        if self._small is None:
            self._small = downsample2(load_dataset("cifar10"))
        return self._small


IMAGE_TARGETS = [BiasedDigits8, BiasedMNIST, BiasedFashionMNIST, Digits8, CIFAR10, CIFAR10Small]
