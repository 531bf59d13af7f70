"""Mode weights of images through the suite's classifier (metrics/classifier.py; 003 §4.2, Fig. 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import datasets
from bench.evaluation import label_metrics
from metrics import classifier as C


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One classifier cache (and memo) for the module: the default classifier is trained once."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.CACHE_ENV, str(path))
        mp.setattr(C, "_MEMO", {})
        yield path


def test_label_weights_known_answers():
    np.testing.assert_allclose(C.label_weights([0, 0, 1, 2, 2, 2], 4), [2 / 6, 1 / 6, 3 / 6, 0])
    # weighted walkers: the weight of a class is the sum of its walkers' normalised weights (not their count)
    np.testing.assert_allclose(C.label_weights([0, 1, 1, 1], 2, [0.7, 0.1, 0.1, 0.1]), [0.7, 0.3])
    # unnormalised weights are renormalised
    np.testing.assert_allclose(C.label_weights([0, 1], 2, [3.0, 1.0]), [0.75, 0.25])


def test_relative_weight_error_known_answers():
    # |w - w*| / w*: an under-estimate counts as much as an over-estimate (a signed error would give -0.5)
    np.testing.assert_allclose(C.relative_weight_error([2 / 7, 4 / 7, 1 / 7], [4 / 7, 2 / 7, 1 / 7]), [0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        C.relative_weight_error([0.5, 0.5], [1 / 3, 1 / 3, 1 / 3])


def test_classifier_is_cached_by_config_and_data(cache):
    data = datasets.images.load_dataset("digits8")
    cfg = C.ClassifierConfig(epochs=5)
    clf = C.get_classifier(data, cfg)
    files = list(cache.glob("classifier-digits8-*.pt"))
    assert len(files) == 1 and 0.8 < clf.accuracy <= 1
    C._MEMO.clear()
    again = C.get_classifier(data, cfg)  # read from disk: same weights, same recorded accuracy
    assert again is not clf and again.accuracy == clf.accuracy
    x = datasets.get_target("biased_digits8").test_set(50)
    torch.testing.assert_close(again.logits(x), clf.logits(x))
    C.get_classifier(data, C.ClassifierConfig(epochs=6))  # another config: another file
    assert len(list(cache.glob("classifier-digits8-*.pt"))) == 2
    files[0].write_bytes(b"corrupt")  # a corrupt cache entry is retrained, not fatal
    C._MEMO.clear()
    assert C.get_classifier(data, cfg).accuracy == clf.accuracy


def test_getting_the_classifier_leaves_the_global_random_stream_as_it_was(cache):
    """Trained, read from disk or from memory: a cell seeds torch's global stream, asks for its classifier, then
    draws its initial parameters and chains, so these must not depend on whether the classifier was built before
    in the process (they did when reading it from disk built the network in the cell's stream)."""
    data = datasets.images.load_dataset("digits8")
    cfg = C.ClassifierConfig(epochs=2)
    for how in ("trained", "from disk", "from memory"):
        if how != "from memory":
            C._MEMO.clear()
        torch.manual_seed(3)
        C.get_classifier(data, cfg)
        drawn = torch.rand(4)
        torch.manual_seed(3)
        assert torch.equal(drawn, torch.rand(4)), how


def test_held_out_images_of_a_known_mix_give_the_mix_back(cache):
    """Real held-out digits in the target's 4:2:1 mix: the classifier's weights are the mix within its own error
    on those images (the total-variation distance is at most the share it mislabels)."""
    t = datasets.get_target("biased_digits8")
    x, k = t.test_labels_and_images(700)
    m = label_metrics(t, x)
    got = np.array([m[f"label_weight[{i}]"] for i in range(3)])
    np.testing.assert_allclose(np.bincount(k) / 700, [4 / 7, 2 / 7, 1 / 7])
    wrong = float((t.assign(x).numpy() != k).mean())
    assert 0.5 * np.abs(got - [4 / 7, 2 / 7, 1 / 7]).sum() <= wrong + 1e-12
    assert wrong <= 1 - m["classifier_accuracy"] + 0.05  # it errs on these about as often as on all held-out digits
    assert m["label_weight_relerr_mean"] < 0.15 and 0.85 < m["classifier_accuracy"] <= 1


def test_weighted_samples_count_with_their_weights(cache):
    """Equal numbers of held-out 2s, 3s and 6s with weights 4:2:1 per class read as the 4/7, 2/7, 1/7 mix, as
    Jarzynski's walkers are read (003 §4.2); unweighted they read as a third each."""
    t = datasets.get_target("biased_digits8")
    d = t.data()
    xs, ws = [], []
    for c, w in zip(t.classes, (4.0, 2.0, 1.0), strict=True):
        idx = np.flatnonzero(d.test_y == c)[:30]
        xs.append(datasets.images.to_pixels(d.test_x[idx], d.levels))
        ws.append(torch.full((len(idx),), w))
    x, w = torch.cat(xs), torch.cat(ws)
    lab = t.assign(x).numpy()
    truth = np.repeat([0, 1, 2], 30)
    wrong = (lab != truth)
    weighted = label_metrics(t, x, w / w.sum())
    got = np.array([weighted[f"label_weight[{i}]"] for i in range(3)])
    assert 0.5 * np.abs(got - [4 / 7, 2 / 7, 1 / 7]).sum() <= float((w / w.sum()).numpy()[wrong].sum()) + 1e-9
    plain = label_metrics(t, x)
    assert abs(plain["label_weight[0]"] - 1 / 3) <= wrong.mean() + 1e-9


def test_predict_among_is_a_partition():
    clf = C.ImageClassifier((1, 8, 8), 10, C.ClassifierConfig())
    x = torch.randn(200, 64)
    lab = clf.predict_among(x, (2, 3, 6))
    assert set(lab.tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(lab.numpy(), clf.logits(x)[:, [2, 3, 6]].argmax(-1).numpy())
