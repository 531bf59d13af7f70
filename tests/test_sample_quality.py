"""Sample-quality metrics (metrics/sample_quality.py): known answers, monotonicity, the recorded protocol, and that the
Inception path never reaches the network. Tiny images (8x8 grey) and tiny extractors: each test takes seconds."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from metrics import sample_quality as F

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (1, 8, 8)


def _images(n: int, seed: int) -> torch.Tensor:
    """Structured 8x8 grey images in [-1, 1]: a smooth random field (bilinear 3x3 -> 8x8) plus a bright blob at a
    random position; (n, 64) flattened like the suite's image targets."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 3, 3, generator=g) * 1.2 - 0.6
    x = nn.functional.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=True)
    c = torch.randint(2, 6, (n, 2), generator=g).float()
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    blob = torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / 2.0)
    return (x[:, 0] + 0.8 * blob).clamp(-1, 1).reshape(n, 64)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return x
    t = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = (k / k.sum())
    img = x.reshape(-1, 1, 8, 8)
    img = nn.functional.conv2d(nn.functional.pad(img, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7))
    img = nn.functional.conv2d(nn.functional.pad(img, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1))
    return img.reshape(x.shape)


@pytest.fixture(scope="module")
def small():
    """A small random conv extractor (fixed seed) with a 10-class head: the registered 'classifier' kind."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return F.ClassifierExtractor(net, nn.Linear(32, 10))


def _flat_extractor():
    """Features = the pixel values themselves (back in [-1, 1]): FID is then the Frechet distance of the pixels."""
    return F.ClassifierExtractor(nn.Flatten())


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Independent closed form: Gaussians fitted to the features, |mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa Sb)^1/2)
    with scipy's matrix square root (torch-fidelity uses eigenvalues instead)."""
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((ma - mb) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def test_quantisation_maps_the_range_onto_uint8_and_counts_clamped_pixels():
    x = torch.tensor([[-1.0, 0.0, 1.0, 1.5, -2.0, -0.5]])
    u8, out = F.to_uint8(x, shape=(1, 1, 6))
    assert u8.dtype == torch.uint8 and u8.shape == (1, 1, 1, 6)
    assert u8.flatten().tolist() == [0, 128, 255, 255, 0, 64]  # round(63.75) = 64; 127.5 rounds to even 128
    assert out == pytest.approx(2 / 6)
    u8, _ = F.to_uint8(torch.tensor([[0.0, 0.5, 1.0]]), value_range=(0, 1), shape=(1, 1, 3))
    assert u8.flatten().tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="non-finite"):
        F.to_uint8(torch.tensor([[0.0, float("nan")]]), shape=(1, 1, 2))
    with pytest.raises(ValueError, match="need shape"):
        F.to_uint8(torch.zeros(2, 4))


def test_fid_matches_the_closed_form_frechet_distance_on_pixel_features():
    ref = _images(300, 1)
    gen = (_images(300, 2) * 0.8 + 0.1).clamp(-1, 1)
    q = F.sample_quality(gen, ref, extractor=_flat_extractor(), reference_split="test", shape=SHAPE,
                         metrics=("fid",))
    to_feat = lambda x: F.to_uint8(x, shape=SHAPE)[0].double().reshape(len(x), -1).numpy() / 255 * 2 - 1  # noqa: E731
    expected = _frechet(to_feat(gen), to_feat(ref))
    assert expected > 0.5
    assert q.metrics["fid_classifier"] == pytest.approx(expected, rel=1e-5)


def test_fid_of_a_set_with_itself_is_zero_and_kid_is_zero_within_its_spread(small):
    x = _images(200, 3)
    q = F.sample_quality(x, x, extractor=small, reference_split="train", shape=SHAPE, kid_subset_size=100)
    assert abs(q.metrics["fid_classifier"]) < 1e-6
    assert abs(q.metrics["kid_classifier_mean"]) < 3 * q.metrics["kid_classifier_std"] + 1e-6


@pytest.mark.parametrize("perturb, levels", [("noise", (0.0, 0.25, 0.5, 1.0)), ("blur", (0.0, 0.8, 1.5, 3.0))])
def test_fid_and_kid_grow_with_a_known_perturbation(small, perturb, levels):
    ref = F.reference_features(_images(400, 4), extractor=small, split="test", shape=SHAPE)
    clean = _images(400, 5)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))
    fids, kids = [], []
    for s in levels:
        gen = (clean + s * noise).clamp(-1, 1) if perturb == "noise" else _blur(clean, s)
        m = F.sample_quality(gen, ref, extractor=small, metrics=("fid", "kid"), shape=SHAPE, kid_subsets=20,
                             kid_subset_size=200).metrics
        fids.append(m["fid_classifier"])
        kids.append(m["kid_classifier_mean"])
    assert np.all(np.diff(fids) > 0), fids
    assert np.all(np.diff(kids) > 0), kids
    assert fids[-1] > 3 * fids[0]
    assert kids[-1] > 3 * m["kid_classifier_std"]  # the largest perturbation is outside KID's own spread


def _one_hot_images(labels):
    """2x2 images whose pixel k is 1 for class k (others -1); features = pixels, head = 40 x identity."""
    x = -torch.ones(len(labels), 4)
    x[torch.arange(len(labels)), torch.as_tensor(labels)] = 1.0
    return x


def test_inception_score_known_answer_with_a_confident_classifier():
    head = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        head.weight.copy_(40 * torch.eye(4))
    ext = F.ClassifierExtractor(nn.Flatten(), head)
    balanced = _one_hot_images([0, 1, 2, 3] * 25)
    q = F.sample_quality(balanced, balanced, extractor=ext, reference_split="test", shape=(1, 2, 2),
                         metrics=("is",), isc_splits=1)
    assert q.metrics["is_classifier_mean"] == pytest.approx(4.0, rel=1e-6)  # exp(H(mean p)) with one-hot p
    single = _one_hot_images([2] * 100)
    q = F.sample_quality(single, balanced, extractor=ext, reference_split="test", shape=(1, 2, 2),
                         metrics=("is",), isc_splits=1)
    assert q.metrics["is_classifier_mean"] == pytest.approx(1.0, abs=1e-6)


def test_same_numbers_as_torch_fidelity_calculate_metrics(small):
    import torch_fidelity

    ref, gen = _images(120, 7), _images(120, 8) * 0.9
    q = F.sample_quality(gen, ref, extractor=small, reference_split="test", shape=SHAPE, kid_subsets=10,
                         kid_subset_size=50, isc_splits=4, seed=3)
    ds = lambda x: F._Images(F.to_uint8(x, shape=SHAPE)[0], None)  # noqa: E731
    tf = torch_fidelity.calculate_metrics(
        input1=ds(gen), input2=ds(ref), fid=True, kid=True, isc=True, feature_extractor=small.register(), cuda=False,
        cache=False, save_cpu_ram=True, verbose=False, kid_subsets=10, kid_subset_size=50, isc_splits=4, rng_seed=3)
    assert q.metrics["fid_classifier"] == pytest.approx(tf[torch_fidelity.KEY_METRIC_FID], rel=1e-9)
    assert q.metrics["kid_classifier_mean"] == pytest.approx(tf[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-9)
    assert q.metrics["is_classifier_mean"] == pytest.approx(tf[torch_fidelity.KEY_METRIC_ISC_MEAN], rel=1e-9)


def test_protocol_records_everything_and_classifier_metrics_are_never_named_inception(small):
    ref, gen = _images(60, 9), _images(50, 10)
    q = F.sample_quality(gen, ref, extractor=small, reference_split="train", shape=SHAPE, kid_subset_size=20,
                         isc_splits=5)
    assert set(q.metrics) == {"fid_classifier", "kid_classifier_mean", "kid_classifier_std", "is_classifier_mean",
                              "is_classifier_std", "out_of_range_frac"}
    p = q.protocol.as_dict()
    assert p["quality_extractor"] == small.name and small.name.startswith("classifier-")
    assert "inception" not in small.name
    assert p["quality_weights_sha256"] == small.weights_sha256 and len(small.weights_sha256) == 64
    assert (p["quality_n_gen"], p["quality_n_ref"], p["quality_reference_split"]) == (50, 60, "train")
    assert (p["quality_value_range"], p["quality_image_shape"], p["quality_image_dtype"]) == ([-1, 1], [1, 8, 8],
                                                                                                 "uint8")
    assert (p["quality_kid_subset_size"], p["quality_isc_splits"]) == (20, 5)
    assert p["quality_torch_fidelity_version"] == "0.4.0"
    assert F.sample_quality(gen, ref, extractor=small, reference_split="train", shape=SHAPE, kid_subset_size=20,
                            isc_splits=5).metrics == q.metrics  # deterministic


def test_classifier_extractor_hash_follows_the_weights_and_ignores_later_training():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    a = F.ClassifierExtractor(net)
    assert F.ClassifierExtractor(net).name == a.name
    ref, gen = _images(50, 11), _images(50, 12)
    before = F.sample_quality(gen, ref, extractor=a, reference_split="test", shape=SHAPE, metrics=("fid",))
    with torch.no_grad():
        net[1].weight.mul_(2)
    assert F.ClassifierExtractor(net).name != a.name
    after = F.sample_quality(gen, ref, extractor=a, reference_split="test", shape=SHAPE, metrics=("fid",))
    assert after.metrics == before.metrics


def test_from_classifier_uses_the_penultimate_layer_and_the_classifiers_own_logits():
    torch.manual_seed(2)

    class Clf(nn.Module):  # like the suite's digit classifier: flattened or (n, C, H, W) input, reshaped inside
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x.reshape(-1, 64))

    clf = Clf()
    ext = F.ClassifierExtractor.from_classifier(clf)
    u8, _ = F.to_uint8(_images(10, 18), shape=SHAPE)
    feats = F.extract_features(u8, ext)
    x = u8.float() / 255 * 2 - 1
    with torch.no_grad():
        assert torch.allclose(feats["features"], clf.net[:2](x.reshape(10, 64)), atol=1e-6)
        assert torch.allclose(feats["logits"], clf(x), atol=1e-6)


def test_bad_arguments_are_refused(small):
    x = _images(20, 13)
    with pytest.raises(ValueError, match="reference_split is required"):
        F.sample_quality(x, x, extractor=small, shape=SHAPE)
    with pytest.raises(ValueError, match="reference split"):
        F.sample_quality(x, x, extractor=small, reference_split="val", shape=SHAPE)
    with pytest.raises(ValueError, match="kid_subset_size"):
        F.sample_quality(x, x, extractor=small, reference_split="test", shape=SHAPE, metrics=("kid",),
                         kid_subset_size=21)
    with pytest.raises(ValueError, match="IS needs class logits"):
        F.sample_quality(x, x, extractor=_flat_extractor(), reference_split="test", shape=SHAPE, metrics=("is",))
    ref = F.reference_features(x, extractor=small, split="test", shape=SHAPE)
    with pytest.raises(ValueError, match="reference features of"):
        F.sample_quality(x, ref, extractor=_flat_extractor(), shape=SHAPE, metrics=("fid",))
    with pytest.raises(ValueError, match="test split"):
        F.sample_quality(x, ref, extractor=small, reference_split="train", shape=SHAPE, metrics=("fid",))


def test_quality_trace_gives_the_same_fid_as_a_direct_call(small):
    ref, gen = _images(80, 14), _images(80, 15)
    trace = F.QualityTrace(ref, extractor=small, reference_split="test", shape=SHAPE)
    point = trace(gen)
    assert set(point) == {"fid_classifier", "out_of_range_frac"}
    direct = F.sample_quality(gen, ref, extractor=small, reference_split="test", shape=SHAPE, metrics=("fid",))
    assert point["fid_classifier"] == pytest.approx(direct.metrics["fid_classifier"], rel=1e-12)
    assert trace.protocol.n_ref == 80


# ------------------------------------------------------------------------------- Inception: offline, one line

@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download (torch.hub or urllib) fails the test."""
    import torch.hub
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    def refuse(*a, **k):
        raise AssertionError(f"download attempted: {a[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(inc, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.delenv(F.ENV_INCEPTION_WEIGHTS, raising=False)


def test_missing_inception_weights_is_one_clear_line_and_no_download(no_network, tmp_path, monkeypatch):
    with pytest.raises(F.SetupError, match="--inception-weights PATH or set EBM_BENCH_INCEPTION_WEIGHTS") as e:
        F.InceptionExtractor()
    assert "\n" not in str(e.value)
    with pytest.raises(F.SetupError, match="no such Inception weights file"):
        F.InceptionExtractor(tmp_path / "absent.pth")
    monkeypatch.setenv(F.ENV_INCEPTION_WEIGHTS, str(tmp_path / "absent.pth"))
    with pytest.raises(F.SetupError, match=f"from {F.ENV_INCEPTION_WEIGHTS}"):
        F.InceptionExtractor()
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the weights")
    with pytest.raises(F.SetupError, match="is not that of torch-fidelity's Inception weights"):
        F.InceptionExtractor(wrong)


def test_cli_checks_the_inception_weights_before_anything_runs(no_network, tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "out"
    rc = main(["run", "--suite", "toy2d", "--fidelity", "smoke", "--out", str(out),
               "--inception-weights", str(tmp_path / "absent.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no such Inception weights file" in err[0]
    assert not out.exists()


def test_inception_runs_offline_from_a_local_file_and_is_reported_unverified(no_network, tmp_path, monkeypatch):
    weights = F.random_inception_weights(tmp_path / "random-inception.pth")
    monkeypatch.setenv(F.ENV_INCEPTION_WEIGHTS, str(weights))
    ext = F.InceptionExtractor(verify=False)
    assert ext.name == "inception-v3-compat-unverified" and not ext.weights_sha256.startswith(F.INCEPTION_SHA256_PREFIX)
    # KID and IS only: FID's layer is KID's ("2048", checked below) and FID's arithmetic is tested above with the
    # small extractor, while torch-fidelity's FID on 2048 features (the eigenvalues of a general 2048 x 2048
    # matrix) alone costs 10-40 s on this CPU
    q = F.sample_quality(_images(2, 16), _images(2, 17), extractor=ext, reference_split="test", shape=SHAPE,
                         metrics=("kid", "is"), kid_subset_size=2, kid_subsets=2, isc_splits=1)
    assert set(q.metrics) == {"kid_inception_unverified_mean", "kid_inception_unverified_std",
                              "is_inception_unverified_mean", "is_inception_unverified_std", "out_of_range_frac"}
    assert all(np.isfinite(v) for v in q.metrics.values())
    assert q.protocol.channels == "grey repeated to 3 channels"
    assert q.protocol.feature_layers == {"kid": "2048", "is": "logits_unbiased"}
    assert ext.layers["fid"] == "2048"


# ------------------------------------------------------------------------------------------- energy histograms

def test_energy_histograms_known_answers():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(20000, generator=g, dtype=torch.float64)
    same = F.energy_histograms(d, d, bins=40)
    assert same.metrics["energy_overlap"] == pytest.approx(1.0)
    assert same.metrics["energy_w1"] == pytest.approx(0.0, abs=1e-12)
    assert np.sum(same.density_data * np.diff(same.edges)) == pytest.approx(1.0)
    s = 1.0 + 0.5 * torch.randn(20000, generator=g, dtype=torch.float64)
    h = F.energy_histograms(s, d, bins=60)
    assert h.metrics["energy_mean_gap"] == pytest.approx(1.0, abs=0.03)
    assert h.metrics["energy_std_ratio"] == pytest.approx(0.5, abs=0.02)
    # W1 between N(1, 0.25) and N(0, 1) = int |F1^-1(u) - F0^-1(u)| du = E|1 - 0.5 Z|, Z ~ N(0, 1)
    z = np.random.default_rng(1).standard_normal(2_000_000)
    assert h.metrics["energy_w1"] == pytest.approx(np.abs(1 - 0.5 * z).mean(), abs=0.03)
    # overlap of N(1, 0.5^2) and N(0, 1): int min(p, q), by quadrature
    t = np.linspace(-8, 8, 200001)
    p = np.exp(-(t - 1) ** 2 / 0.5) / np.sqrt(0.5 * np.pi)
    q = np.exp(-t ** 2 / 2) / np.sqrt(2 * np.pi)
    assert h.metrics["energy_overlap"] == pytest.approx(np.trapezoid(np.minimum(p, q), t), abs=0.03)
    apart = F.energy_histograms(d, d + 100, bins=50)
    assert apart.metrics["energy_overlap"] == 0.0


def test_energy_histograms_on_a_hand_made_pair_of_unequal_sizes():
    """Samples {0, 5} and data {0.5, 1.5, 4.5} on 5 bins of width 1 over [0, 5], worked out by hand: densities
    (1/2, 0, 0, 0, 1/2) and (1/3, 1/3, 0, 0, 1/3), overlap 2/3; W1 = the area between the two step CDFs,
    0.25 + 1/6 + 0.5 + 0.25 = 7/6 (not the gap of the means, 1/3); the data's std with ddof 1, sqrt(13/3)."""
    h = F.energy_histograms(torch.tensor([0.0, 5.0]), torch.tensor([0.5, 1.5, 4.5]), bins=5)
    np.testing.assert_allclose(h.edges, [0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(h.density_samples, [0.5, 0, 0, 0, 0.5])
    np.testing.assert_allclose(h.density_data, [1 / 3, 1 / 3, 0, 0, 1 / 3])
    sd = np.sqrt(13 / 3)
    assert h.metrics == pytest.approx({"energy_overlap": 2 / 3, "energy_w1": 7 / 6,
                                       "energy_mean_gap": (2.5 - 13 / 6) / sd,
                                       "energy_std_ratio": (5 / np.sqrt(2)) / sd})


def test_quality_plots_write_pngs(tmp_path):
    import pandas as pd

    from bench import plots_quality

    g = torch.Generator().manual_seed(0)
    h = F.energy_histograms(torch.randn(500, generator=g) + 0.5, torch.randn(500, generator=g))
    p = plots_quality.energy_histogram(h, tmp_path / "energy.png", title="toy")
    assert p.stat().st_size > 1000
    traces = pd.DataFrame([{"target": "digits", "algorithm": a, "seed": s, "iteration": it, "grad_evals": 10 * it,
                            "metric": "fid_classifier", "value": 100.0 / it + s}
                           for a in ("pcd", "jarzynski") for s in (0, 1) for it in (1, 2, 5)])
    p = plots_quality.fid_over_training(traces, tmp_path / "fid.png", metric="fid_classifier")
    assert p is not None and p.stat().st_size > 1000
    assert plots_quality.fid_over_training(traces, tmp_path / "none.png", metric="fid_inception") is None


def test_project_tests_folder_is_not_a_package_shadowed_by_torch_fidelitys_tests():
    """torch-fidelity 0.4.0 installs a top-level ``tests`` package; ours stays a rootdir folder without
    ``__init__.py`` so pytest imports this file as ``test_sample_quality``, never as ``tests.test_sample_quality``."""
    assert not (ROOT / "tests" / "__init__.py").exists()
    assert Path(__file__).resolve().parent == ROOT / "tests"
    assert __name__ == "test_sample_quality"


def test_a_broken_torch_fidelity_import_is_one_line(monkeypatch):
    """A torchvision that does not match its torch fails at import: the metrics say so in one line."""
    import sys

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import raises ImportError
    with pytest.raises(F.SetupError, match="torch-fidelity .* cannot be imported") as e:
        F.sample_quality(_images(4, 19), _images(4, 20), extractor=_flat_extractor(), reference_split="test",
                         shape=SHAPE, metrics=("fid",))
    assert "\n" not in str(e.value)
