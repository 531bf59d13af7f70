"""Mode weights of images through a classifier (003 §4.2, App. B.2, Fig. 3).

003 reads the weight of each digit among generated images "using a classifier pre-trained on the data set":
each sample gets a label; the weight of class k is the share of samples labelled k, or, for Jarzynski's
weighted walkers, the sum of their normalised weights over the walkers labelled k. Fig. 3 reports the relative
error |w_k - w*_k| / w*_k of each class.

The classifier is the suite's own, trained on the labelled training split of the full (balanced) data set,
never on generated samples: a small MLP for images of at most 256 pixels (8x8 digits), a small CNN otherwise.
It trains on uniformly dequantised pixels (``datasets.images.to_pixels``) so that it labels continuous images.
It is cached on disk (``EBM_BENCH_CACHE`` or ``~/.cache/ebm-bench``) under a key hashing its config and the
data's hash, written atomically, and its held-out accuracy is stored with it and recorded in every result that
uses it (``classifier_accuracy``).

Pure functions: ``label_weights``, ``relative_weight_error``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from metrics.modes import sample_mode_weights

CACHE_ENV = "EBM_BENCH_CACHE"


def label_weights(labels, n_classes: int, weights=None) -> np.ndarray:
    """Weight of each class among labelled samples: the share labelled k, or with normalised importance
    ``weights`` (Jarzynski walkers, 003 §4.2) the sum of the weights of the samples labelled k (renormalised)."""
    return sample_mode_weights(torch.as_tensor(np.asarray(labels)), n_classes,
                               None if weights is None else torch.as_tensor(np.asarray(weights, dtype=float)))


def relative_weight_error(weights, true_weights) -> np.ndarray:
    """Per-class relative weight error |w_k - w*_k| / w*_k (003 Fig. 3)."""
    w, t = np.asarray(weights, float), np.asarray(true_weights, float)
    if w.shape != t.shape:
        raise ValueError(f"weights of shape {w.shape} vs true weights of shape {t.shape}")
    return np.abs(w - t) / t


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    #: pixels at most this many: an MLP (2 hidden layers of ``width``), otherwise a CNN
    mlp_max_pixels: int = 256
    width: int = 256


def default_config(n_train: int, n_pixels: int) -> ClassifierConfig:
    """30 epochs on small data (8x8 digits: ~1 s), 3 epochs on MNIST-sized data (~a minute on 2 CPU cores)."""
    return ClassifierConfig(epochs=30 if n_train < 10_000 else 3)


class _CNN(nn.Module):
    def __init__(self, c: int, h: int, w: int, n_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x):
        return self.net(x)


class ImageClassifier(nn.Module):
    """Labels flattened images in [-1, 1] (the suite's image convention; reshaped to ``shape`` inside)."""

    def __init__(self, shape, n_classes: int, cfg: ClassifierConfig):
        super().__init__()
        self.shape, self.n_classes = tuple(shape), n_classes
        d = math.prod(self.shape)
        if d <= cfg.mlp_max_pixels:
            self.net = nn.Sequential(nn.Linear(d, cfg.width), nn.ReLU(), nn.Linear(cfg.width, cfg.width), nn.ReLU(),
                                     nn.Linear(cfg.width, n_classes))
            self._flat = True
        else:
            self.net = _CNN(*self.shape, n_classes)
            self._flat = False
        self.accuracy = float("nan")

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(-1, math.prod(self.shape)) if self._flat else x.reshape(-1, *self.shape)
        return self.net(x)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        x = x.detach().cpu().float().reshape(len(x), -1)
        return torch.cat([self(c) for c in x.split(4096)]) if len(x) else torch.zeros(0, self.n_classes)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(-1)

    def predict_among(self, x: Tensor, classes) -> Tensor:
        """Index into ``classes`` of the most likely of those classes (a partition of the whole space)."""
        return self.logits(x)[:, list(classes)].argmax(-1)


def train_classifier(train_x: Tensor, train_y: Tensor, shape, n_classes: int, cfg: ClassifierConfig,
                     dequant_levels: int = 0) -> ImageClassifier:
    """Adam on cross-entropy; with ``dequant_levels`` L the uint8 levels are dequantised afresh every epoch."""
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = ImageClassifier(shape, n_classes, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = len(train_x)
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    if model._flat:  # a small MLP trains fastest on one thread (and does not fight other jobs for cores)
        torch.set_num_threads(1)
    try:
        _epochs(model, opt, train_x, train_y, cfg, dequant_levels, g, n, tqdm)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _epochs(model, opt, train_x, train_y, cfg, dequant_levels, g, n, tqdm):
    for _ in tqdm(range(cfg.epochs), desc="classifier", leave=False, disable=n < 10_000):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            x = train_x[b].float()
            if dequant_levels:
                x = 2 * (x + torch.rand(x.shape, generator=g)) / dequant_levels - 1
            loss = nn.functional.cross_entropy(model(x), train_y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def cache_dir() -> Path:
    v = os.environ.get(CACHE_ENV, "").strip()
    return Path(v).expanduser() if v else Path.home() / ".cache" / "ebm-bench"


def classifier_key(data, cfg: ClassifierConfig) -> str:
    blob = json.dumps([data.name, data.data_hash(), list(data.shape), dataclasses.asdict(cfg), "v1"], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_MEMO: dict[str, ImageClassifier] = {}


def get_classifier(data, cfg: ClassifierConfig | None = None) -> ImageClassifier:
    """The suite's classifier of a ``datasets.images.LabelledImages``: from memory, else from the disk cache,
    else trained on its training split (all classes) and cached; ``.accuracy`` is its held-out accuracy.

    torch's global random stream is left as it was: a cell asks for its classifier between seeding that stream and
    drawing its initial parameters and chains, and building the network (even to load cached weights) draws from
    it, so a cell's numbers would otherwise depend on whether an earlier cell of its process had built it."""
    cfg = cfg or default_config(len(data.train_x), math.prod(data.shape))
    key = classifier_key(data, cfg)
    if key in _MEMO:
        return _MEMO[key]
    with torch.random.fork_rng(devices=[]):  # the classifier is built on the CPU
        _MEMO[key] = _load_or_train(data, cfg, key)
    return _MEMO[key]


def _load_or_train(data, cfg: ClassifierConfig, key: str) -> ImageClassifier:
    n_classes = int(max(data.train_y.max(), data.test_y.max())) + 1
    path = cache_dir() / f"classifier-{data.name}-{key}.pt"
    model = None
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = ImageClassifier(data.shape, n_classes, cfg)
            model.load_state_dict(blob["state"])
            model.accuracy = float(blob["accuracy"])
            model.eval()
        except Exception:  # noqa: BLE001 - a corrupt cache entry is retrained and overwritten
            model = None
    if model is None:
        # torch.tensor copies: the data's arrays may be read-only (as_tensor would share them and warn)
        tx = torch.tensor(data.train_x).reshape(len(data.train_x), -1)
        model = train_classifier(tx, torch.tensor(data.train_y), data.shape, n_classes, cfg, data.levels)
        test = torch.tensor(data.test_x).reshape(len(data.test_x), -1).float()
        test = 2 * (test + torch.rand(test.shape, generator=torch.Generator().manual_seed(cfg.seed))) / data.levels - 1
        model.accuracy = float((model.predict(test).numpy() == data.test_y).mean())
        _atomic_save({"state": model.state_dict(), "accuracy": model.accuracy, "config": dataclasses.asdict(cfg)},
                     path)
    return model
