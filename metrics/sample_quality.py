"""Sample quality of image models: FID, KID and IS through torch-fidelity, under a pinned protocol.

Every number comes with its :class:`QualityProtocol` (``as_dict()`` goes into the result's config): the range the
images were given in and how they were quantised, the number of generated and reference images, the reference
split, the feature extractor, its weights' sha256, and torch-fidelity's version and settings. Published FIDs
(Heusel et al. 2017) use Inception-v3 on 50,000 generated against 50,000 reference images; a number measured any
other way is only compared with numbers measured the same way.

Two kinds of feature extractor:

- :class:`InceptionExtractor`: torch-fidelity's ``inception-v3-compat`` (the TensorFlow FID network), with its
  weights read from a local file given as an argument, ``--inception-weights PATH`` or the environment variable
  ``EBM_BENCH_INCEPTION_WEIGHTS``. It never downloads: a missing file, or a file whose sha256 is not the one
  torch-fidelity publishes, is one :class:`SetupError` line before anything runs. Metrics are
  named ``fid_inception``, ``kid_inception_mean``, ``is_inception_mean``, ...
- :class:`ClassifierExtractor`: any torch module mapping images to a feature vector (and optionally a head
  mapping features to class logits, for IS), e.g. the suite's own digit classifier. It is registered with
  torch-fidelity as ``classifier-<sha256 of its architecture and weights, 12 digits>`` and its metrics are named
  ``fid_classifier``, ... so that they are never read as an Inception FID.

Images: a float tensor (n, C, H, W), or flattened (n, C*H*W) with ``shape=(C, H, W)``, in ``value_range``
(default [-1, 1], the suite's image range). They are quantised as a PNG would store them,
``round((x - lo) / (hi - lo) * 255)`` clamped to [0, 255], uint8, which is what torch-fidelity's Inception
expects; values outside the range are clamped and their share of the generated pixels is reported
(``out_of_range_frac``). Grey images are repeated to three channels for Inception. Non-finite pixels are an
error (a diverged sampler is the runner's to record).

Also here: the energy histograms of samples against data (Grenioux et al. 2023, Fig. 7) and their distances
(:func:`energy_histograms`), and :class:`QualityTrace`, the FID over training that a runner's trace points call.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


class SetupError(RuntimeError):
    """A feature extractor cannot be set up (its weights file is missing or not the published one, torch-fidelity
    cannot be imported): the message is one line saying what and where; the command line prints it as a
    ``bench: error`` line (exit status 2)."""


#: environment variable naming the local Inception weights file
ENV_INCEPTION_WEIGHTS = "EBM_BENCH_INCEPTION_WEIGHTS"
#: the file torch-fidelity publishes (its name ends in the first 8 hex digits of its sha256, torch.hub's rule)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION = "inception-v3-compat"
METRICS = ("fid", "kid", "is")
SPLITS = ("train", "test")
QUANTISATION = "round((x - lo) / (hi - lo) * 255), clamped to [0, 255], uint8"


def _torch_fidelity():
    """torch-fidelity, imported on first use (it imports torchvision: a mismatched torch/torchvision pair fails
    here, and says so in one line)."""
    try:
        import torch_fidelity
        import torch_fidelity.utils  # noqa: F401
    except (ImportError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SetupError(f"torch-fidelity (FID, KID, IS) cannot be imported: {first} (install torch and torchvision "
                         "as a matching pair, e.g. with -c constraints.txt)") from None
    return torch_fidelity


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- extractors

class InceptionExtractor:
    """torch-fidelity's ``inception-v3-compat`` with weights from a local file, never downloaded.

    ``weights``: the path of ``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's release file); when
    None, the environment variable ``EBM_BENCH_INCEPTION_WEIGHTS``. The file must exist and its sha256 must
    start with 6726825d, else a :class:`SetupError` says so in one line. ``verify=False`` accepts any file (e.g.
    random weights for timing): it is then reported as ``inception-v3-compat-unverified`` and its metrics are
    named ``fid_inception_unverified`` ..., never as Inception FID.
    """

    registry_name = INCEPTION
    channels = 3
    layers = {"fid": "2048", "kid": "2048", "is": "logits_unbiased"}

    def __init__(self, weights: str | Path | None = None, *, verify: bool = True):
        self.weights = resolve_inception_weights(weights)
        self.weights_sha256 = sha256_file(self.weights)
        verified = self.weights_sha256.startswith(INCEPTION_SHA256_PREFIX)
        if verify and not verified:
            raise SetupError(f"{self.weights}: sha256 {self.weights_sha256[:16]}... is not that of torch-fidelity's "
                             f"Inception weights ({INCEPTION_FILE}, sha256 {INCEPTION_SHA256_PREFIX}...)")
        self.name = INCEPTION if verified else f"{INCEPTION}-unverified"
        self.suffix = "inception" if verified else "inception_unverified"
        self._built: dict = {}

    def build_kwargs(self) -> dict:
        return {"feature_extractor_weights_path": str(self.weights)}

    def module(self, device: str = "cpu"):
        """The torch-fidelity extractor with every layer the metrics use, built once per device."""
        device = str(device)
        if device not in self._built:
            tf = _torch_fidelity()
            self._built[device] = tf.utils.create_feature_extractor(
                self.registry_name, sorted(set(self.layers.values())), cuda=device.startswith("cuda"),
                verbose=False, **self.build_kwargs())
        return self._built[device]


def resolve_inception_weights(weights: str | Path | None = None) -> Path:
    """The Inception weights file from the argument or ``EBM_BENCH_INCEPTION_WEIGHTS``; a missing one is a
    one-line :class:`SetupError`, never a download."""
    given = weights if weights is not None else os.environ.get(ENV_INCEPTION_WEIGHTS) or None
    if given is None:
        raise SetupError(f"Inception FID needs the weights file {INCEPTION_FILE}: pass --inception-weights PATH or "
                         f"set {ENV_INCEPTION_WEIGHTS} (the suite never downloads it)")
    path = Path(given).expanduser()
    if not path.is_file():
        source = "--inception-weights" if weights is not None else ENV_INCEPTION_WEIGHTS
        raise SetupError(f"{path}: no such Inception weights file (from {source}; expected {INCEPTION_FILE})")
    return path


def random_inception_weights(path: str | Path) -> Path:
    """Write torch-fidelity's Inception-v3 architecture with *random* weights to ``path``, without any download:
    for tests of the offline route and for timing only (its sha256 is not the published one, so it is only
    accepted with ``verify=False`` and reported as ``inception-v3-compat-unverified``)."""
    _torch_fidelity()
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    cls = inc.FeatureExtractorInceptionV3
    load, fetch = cls.load_state_dict, inc.load_state_dict_from_url
    try:  # the constructor always loads weights: skip that step (and never fetch) for this one instance
        cls.load_state_dict = lambda self, *a, **k: None
        inc.load_state_dict_from_url = lambda *a, **k: None
        net = cls(INCEPTION, ["2048"])
    finally:
        cls.load_state_dict, inc.load_state_dict_from_url = load, fetch
    torch.save(net.state_dict(), path)
    return Path(path)


class ClassifierExtractor:
    """Features from any torch module, e.g. the suite's own digit classifier, registered with torch-fidelity.

    ``features`` maps float images (n, C, H, W) in ``value_range`` to features (n, d) (more dimensions are
    flattened); ``head``, if given, maps those features to class logits and enables IS. Both are copied at
    construction (later training of the originals changes nothing) and hashed with their architecture; the
    extractor is named ``classifier-<12 hex digits>`` and its metrics ``fid_classifier``, ``kid_classifier_mean``,
    ``is_classifier_mean``: never confused with Inception FID.
    """

    channels = None  # as given

    def __init__(self, features: nn.Module, head: nn.Module | None = None, *, value_range=(-1.0, 1.0)):
        self.features = copy.deepcopy(features).eval().requires_grad_(False)
        self.head = None if head is None else copy.deepcopy(head).eval().requires_grad_(False)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        h = hashlib.sha256()
        for part in (self.features, self.head):
            h.update(repr(part).encode())
            if part is not None:
                for k, v in sorted(part.state_dict().items()):
                    h.update(k.encode())
                    h.update(str(v.dtype).encode() + str(tuple(v.shape)).encode())
                    h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(repr(self.value_range).encode())
        self.weights_sha256 = h.hexdigest()
        self.name = self.registry_name = f"classifier-{self.weights_sha256[:12]}"
        self.suffix = "classifier"
        self.layers = {"fid": "features", "kid": "features"} | ({"is": "logits"} if head is not None else {})
        self._built: dict = {}

    @classmethod
    def from_classifier(cls, model: nn.Module, *, value_range=(-1.0, 1.0)) -> ClassifierExtractor:
        """From a classifier whose last operation is an ``nn.Linear`` giving the logits (e.g. the suite's digit
        classifier, which takes images in [-1, 1] of any layout and reshapes them itself): features = the input of
        that last Linear (the penultimate layer), head = that Linear."""
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear output layer")
        return cls(_Penultimate(model), linears[-1], value_range=value_range)

    def build_kwargs(self) -> dict:
        return {}

    def register(self) -> str:
        """Register with torch-fidelity under ``self.name`` (once; the name is a hash of the function)."""
        tf = _torch_fidelity()
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        if self.name not in FEATURE_EXTRACTORS_REGISTRY:
            tf.register_feature_extractor(self.name, _module_extractor_class(self))
        return self.name

    def module(self, device: str = "cpu"):
        device = str(device)
        if device not in self._built:
            tf = _torch_fidelity()
            self.register()
            self._built[device] = tf.utils.create_feature_extractor(
                self.name, sorted(set(self.layers.values())), cuda=device.startswith("cuda"), verbose=False)
        return self._built[device]


class _Penultimate(nn.Module):
    """The input of a classifier's last ``nn.Linear``, captured during its forward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)][-1]
        seen = []
        handle = last.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1]


def _module_extractor_class(ext: ClassifierExtractor):
    """A torch-fidelity FeatureExtractorBase subclass bound to ``ext``'s modules (constructed by torch-fidelity
    as ``cls(name, features_list, **kwargs)``)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    provided = ("features", "logits") if ext.head is not None else ("features",)
    lo, hi = ext.value_range

    class ModuleFeatureExtractor(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = copy.deepcopy(ext.features)
            self.head = copy.deepcopy(ext.head) if ext.head is not None else None
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return provided

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            raise NotImplementedError

        def forward(self, x):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"expected uint8 images (n, C, H, W), got {x.dtype} {tuple(x.shape)}")
            p = next(self.net.parameters(), None)
            dtype = p.dtype if p is not None else torch.float32
            x = x.to(dtype) / 255 * (hi - lo) + lo
            f = self.net(x).flatten(1)
            out = {"features": f}
            if "logits" in self.features_list:
                out["logits"] = self.head(f).flatten(1)
            return tuple(out[k].to(torch.float32) for k in self.features_list)

    ModuleFeatureExtractor.__name__ = ModuleFeatureExtractor.__qualname__ = f"Classifier_{ext.weights_sha256[:12]}"
    return ModuleFeatureExtractor


# ------------------------------------------------------------------------------------------------- images

def to_uint8(images: Tensor, *, value_range=(-1.0, 1.0), shape=None) -> tuple[Tensor, float]:
    """Images as the extractors see them: uint8 (n, C, H, W) by ``QUANTISATION``, and the share of pixel values
    that lay outside ``value_range`` (clamped). ``images``: (n, C, H, W), or (n, C*H*W) with ``shape``; uint8
    images are taken as already quantised."""
    x = torch.as_tensor(images).detach()
    if x.dim() == 2:
        if shape is None:
            raise ValueError(f"flattened images {tuple(x.shape)} need shape=(C, H, W)")
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) != x.shape[1]:
            raise ValueError(f"images of {x.shape[1]} values do not have shape {shape}")
        x = x.reshape(x.shape[0], *shape)
    elif x.dim() != 4:
        raise ValueError(f"images must be (n, C, H, W) or (n, C*H*W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no images")
    if x.dtype == torch.uint8:
        return x.cpu(), 0.0
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range {value_range}: need lo < hi")
    x = x.cpu().double()
    if not torch.isfinite(x).all():
        raise ValueError(f"{int((~torch.isfinite(x)).sum())} non-finite pixel values")
    out = float(((x < lo) | (x > hi)).double().mean())
    q = ((x - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
    return q, out


class _Images(torch.utils.data.Dataset):
    """Yields single uint8 tensors (torch-fidelity's dataset contract), grey repeated to ``channels``."""

    def __init__(self, x: Tensor, channels: int | None):
        if channels is not None and x.shape[1] not in (1, channels):
            raise ValueError(f"{x.shape[1]}-channel images for an extractor that takes {channels}")
        self.x, self.repeat = x, (channels if channels is not None and x.shape[1] == 1 else 1)

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i].repeat(self.repeat, 1, 1) if self.repeat > 1 else self.x[i]


def extract_features(images_u8: Tensor, extractor, *, batch_size: int = 64, device: str = "cpu") -> dict[str, Tensor]:
    """Features per layer (torch-fidelity's loop, no worker processes, no cache) of uint8 images."""
    tf = _torch_fidelity()
    return tf.utils.get_featuresdict_from_dataset(
        _Images(images_u8, extractor.channels), extractor.module(device), batch_size,
        str(device).startswith("cuda"), True, False)


# ----------------------------------------------------------------------------------------------- protocol

@dataclass(frozen=True)
class QualityProtocol:
    """Everything that decides an FID/KID/IS value; ``as_dict()`` goes with every result."""

    extractor: str
    weights_sha256: str
    feature_layers: dict
    value_range: tuple
    image_shape: tuple
    n_gen: int
    n_ref: int
    reference_split: str
    kid_subsets: int
    kid_subset_size: int
    isc_splits: int
    rng_seed: int
    image_dtype: str = "uint8"
    quantisation: str = QUANTISATION
    channels: str = "as given"
    torch_fidelity_version: str = field(default_factory=lambda: _torch_fidelity().__version__)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["value_range"], d["image_shape"] = list(self.value_range), list(self.image_shape)
        return {f"quality_{k}": v for k, v in d.items()}


@dataclass
class ReferenceFeatures:
    """Features of the reference images, computed once (e.g. for every trace point of a training run)."""

    extractor: str
    weights_sha256: str
    split: str
    n: int
    image_shape: tuple
    value_range: tuple
    features: dict  # layer -> Tensor (n, d)
    fid_stats: dict | None = None  # layer -> {"mu", "sigma"}


def reference_features(images, *, extractor, split: str, value_range=(-1.0, 1.0), shape=None, batch_size: int = 64,
                       device: str = "cpu") -> ReferenceFeatures:
    """Features (and FID statistics) of the reference images of ``split`` ("train" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"reference split {split!r}: expected one of {SPLITS}")
    u8, _ = to_uint8(images, value_range=value_range, shape=shape)
    feats = extract_features(u8, extractor, batch_size=batch_size, device=device)
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = {"fid": fid_features_to_statistics(feats[extractor.layers["fid"]])} if "fid" in extractor.layers else None
    return ReferenceFeatures(extractor.name, extractor.weights_sha256, split, u8.shape[0], tuple(u8.shape[1:]),
                             tuple(float(v) for v in value_range), feats, stats)


@dataclass
class SampleQuality:
    """``metrics``: name -> float (``fid_<extractor>``, ``kid_<extractor>_mean`` / ``_std``, ``is_<extractor>_mean`` /
    ``_std``, ``out_of_range_frac``); ``protocol``: how they were measured."""

    metrics: dict
    protocol: QualityProtocol

    def as_dict(self) -> dict:
        return {**self.metrics, **self.protocol.as_dict()}


def sample_quality(generated, reference, *, extractor, reference_split: str | None = None, metrics=METRICS,
                   value_range=(-1.0, 1.0), shape=None, kid_subsets: int = 100, kid_subset_size: int | None = None,
                   isc_splits: int = 10, seed: int = 2020, batch_size: int = 64, device: str = "cpu") -> SampleQuality:
    """FID, KID and IS of ``generated`` images against ``reference`` (images, or :class:`ReferenceFeatures` from
    :func:`reference_features`), with ``extractor`` (an :class:`InceptionExtractor` or :class:`ClassifierExtractor`).

    ``reference_split`` ("train" or "test") is required with reference images. KID uses ``kid_subsets`` subsets of
    ``kid_subset_size`` images (default min(1000, n_gen, n_ref), torch-fidelity's 1000 when both sets are large);
    IS uses ``isc_splits`` splits of the generated images (needs a head for a classifier extractor). Same
    ``seed``, same subsets: the value is deterministic.
    """
    tf = _torch_fidelity()
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics {list(metrics)}: choose from {METRICS}")
    if "is" in metrics and "is" not in extractor.layers:
        raise ValueError(f"IS needs class logits: {extractor.name} has no head")
    if isinstance(reference, ReferenceFeatures):
        ref = reference
        if ref.extractor != extractor.name or ref.weights_sha256 != extractor.weights_sha256:
            raise ValueError(f"reference features of {ref.extractor}, not of {extractor.name}")
        if reference_split is not None and reference_split != ref.split:
            raise ValueError(f"reference features of the {ref.split} split, not {reference_split}")
        if tuple(float(v) for v in value_range) != ref.value_range:
            raise ValueError(f"reference features of images in {ref.value_range}, generated in {value_range}")
    else:
        if reference_split is None:
            raise ValueError(f"reference_split is required: one of {SPLITS}")
        ref = reference_features(reference, extractor=extractor, split=reference_split, value_range=value_range,
                                 shape=shape, batch_size=batch_size, device=device)
    gen_u8, out_frac = to_uint8(generated, value_range=value_range, shape=shape)
    if tuple(gen_u8.shape[1:]) != ref.image_shape:
        raise ValueError(f"generated images {tuple(gen_u8.shape[1:])} vs reference images {ref.image_shape}")
    n_gen = gen_u8.shape[0]
    kid_size = min(1000, n_gen, ref.n) if kid_subset_size is None else int(kid_subset_size)
    if "kid" in metrics and not 2 <= kid_size <= min(n_gen, ref.n):
        raise ValueError(f"kid_subset_size {kid_size} must be in [2, min(n_gen={n_gen}, n_ref={ref.n})]")
    if "is" in metrics and not 1 <= isc_splits <= n_gen:
        raise ValueError(f"isc_splits {isc_splits} must be in [1, n_gen={n_gen}]")
    feats = extract_features(gen_u8, extractor, batch_size=batch_size, device=device)
    s, out = extractor.suffix, {}
    if "fid" in metrics:
        layer = extractor.layers["fid"]
        stats = ref.fid_stats["fid"] if ref.fid_stats else fid_features_to_statistics(ref.features[layer])
        v = fid_statistics_to_metric(fid_features_to_statistics(feats[layer]), stats, False)
        out[f"fid_{s}"] = float(v[tf.KEY_METRIC_FID])
    if "kid" in metrics:
        layer = extractor.layers["kid"]
        v = kid_features_to_metric(feats[layer], ref.features[layer], kid_subsets=kid_subsets,
                                   kid_subset_size=kid_size, rng_seed=seed, verbose=False)
        out[f"kid_{s}_mean"], out[f"kid_{s}_std"] = v[tf.KEY_METRIC_KID_MEAN], v[tf.KEY_METRIC_KID_STD]
    if "is" in metrics:
        v = isc_features_to_metric(feats[extractor.layers["is"]], isc_splits, True, seed)
        out[f"is_{s}_mean"], out[f"is_{s}_std"] = v[tf.KEY_METRIC_ISC_MEAN], v[tf.KEY_METRIC_ISC_STD]
    out["out_of_range_frac"] = out_frac
    ch = "as given" if extractor.channels is None else f"grey repeated to {extractor.channels} channels"
    protocol = QualityProtocol(
        extractor=extractor.name, weights_sha256=extractor.weights_sha256,
        feature_layers={m: extractor.layers[m] for m in metrics}, value_range=ref.value_range,
        image_shape=ref.image_shape, n_gen=n_gen, n_ref=ref.n, reference_split=ref.split,
        kid_subsets=kid_subsets if "kid" in metrics else 0, kid_subset_size=kid_size if "kid" in metrics else 0,
        isc_splits=isc_splits if "is" in metrics else 0, rng_seed=seed, channels=ch)
    return SampleQuality(out, protocol)


class QualityTrace:
    """FID (and optionally KID/IS) over training: reference features computed once, then one call per trace
    point with that point's samples. Returns ``{metric: value}`` for the runner's trace rows; ``protocol`` is
    that of the last call (the same at every point when n_gen is)."""

    def __init__(self, reference, *, extractor, reference_split: str, metrics=("fid",), value_range=(-1.0, 1.0),
                 shape=None, batch_size: int = 64, device: str = "cpu", **kwargs):
        self.extractor, self.metrics, self.kwargs = extractor, tuple(metrics), kwargs
        self.value_range, self.shape, self.batch_size, self.device = value_range, shape, batch_size, device
        self.reference = reference_features(reference, extractor=extractor, split=reference_split,
                                            value_range=value_range, shape=shape, batch_size=batch_size, device=device)
        self.protocol: QualityProtocol | None = None

    def __call__(self, generated) -> dict[str, float]:
        q = sample_quality(generated, self.reference, extractor=self.extractor, metrics=self.metrics,
                           value_range=self.value_range, shape=self.shape, batch_size=self.batch_size,
                           device=self.device, **self.kwargs)
        self.protocol = q.protocol
        return q.metrics


# ------------------------------------------------------------------------------------------ energy histograms

@dataclass
class EnergyHistograms:
    """Energies of samples against those of data on shared bins (Grenioux et al. 2023, Fig. 7, after Dai et al.
    2019): ``edges`` (bins + 1), ``density_samples`` and ``density_data`` (each integrates to 1), and ``metrics``."""

    edges: np.ndarray
    density_samples: np.ndarray
    density_data: np.ndarray
    metrics: dict


def energy_histograms(e_samples, e_data, *, bins: int = 50, range=None) -> EnergyHistograms:
    """Histograms of the energies of samples and of data on the same ``bins`` equal bins over ``range`` (default:
    from the lowest to the highest energy of both sets), and four numbers:

    - ``energy_overlap``: sum over bins of min(p, q) x width, in [0, 1]; 1 when the histograms coincide;
    - ``energy_w1``: the 1-Wasserstein distance between the two empirical energy distributions (no bins);
    - ``energy_mean_gap``: (mean of samples - mean of data) / std of data: samples too low (< 0) or too high;
    - ``energy_std_ratio``: std of samples / std of data: < 1 when samples are less diverse in energy (000 Fig. 7).
    """
    from scipy.stats import wasserstein_distance

    s = np.asarray(torch.as_tensor(e_samples).detach().cpu().double().reshape(-1))
    d = np.asarray(torch.as_tensor(e_data).detach().cpu().double().reshape(-1))
    if s.size < 2 or d.size < 2:
        raise ValueError("need at least 2 energies of samples and of data")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise ValueError("non-finite energies")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lo, hi = (min(s.min(), d.min()), max(s.max(), d.max())) if range is None else map(float, range)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    ps, _ = np.histogram(s, edges, density=False)
    pd_, _ = np.histogram(d, edges, density=False)
    width = np.diff(edges)
    ps, pd_ = ps / s.size / width, pd_ / d.size / width  # densities; mass outside ``range`` is dropped
    sd = d.std(ddof=1)
    metrics = {
        "energy_overlap": float(np.sum(np.minimum(ps, pd_) * width)),
        "energy_w1": float(wasserstein_distance(s, d)),
        "energy_mean_gap": float((s.mean() - d.mean()) / sd) if sd > 0 else float("nan"),
        "energy_std_ratio": float(s.std(ddof=1) / sd) if sd > 0 else float("nan"),
    }
    return EnergyHistograms(edges, ps, pd_, metrics)
