"""pytest-benchmark: the cost of sample-quality metrics (metrics/sample_quality.py) on the CPU.

- features per image: a small digit-sized extractor (28x28 grey, two conv layers, 64 features) and Inception-v3
  (torch-fidelity's inception-v3-compat architecture with *random* weights built here: never downloaded; timing
  only) on 32x32 RGB images, which it resizes to 299x299;
- the FID statistic itself (torch-fidelity: the eigenvalues of a general d x d matrix) at d = 64 and d = 2048.

Per image = the round's time / the batch size printed in each test's name. One thread (torch here; numpy's BLAS
through the environment): on a shared 2-core machine more threads only measure the contention. Not part of CI's
test command:
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m pytest benchmarks/test_bench_sample_quality.py --benchmark-only``.

Measured on 2 shared cores under a load average of ~13 (so wall time is ~2.5x CPU time), one thread: medians
0.062 ms per image for the small extractor (0.023 ms CPU), 0.41 s per image for Inception (0.12 s CPU), and the
FID statistic 0.54 ms at d = 64 and 10.5 s at d = 2048 (3.4 s CPU).
A 50,000-image Inception FID is therefore about 1.7 CPU-hours for the generated images alone: a GPU job.
"""

import bench  # noqa: F401

# isort: split
import pytest
import torch
from torch import nn

from metrics import sample_quality as F


def _digit_extractor():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 64))
    return F.ClassifierExtractor(net, nn.Linear(64, 10))


@pytest.mark.parametrize("batch", [512])
def test_small_extractor_features(benchmark, batch):
    torch.set_num_threads(1)
    ext = _digit_extractor()
    x = F.to_uint8(torch.rand(batch, 1, 28, 28) * 2 - 1)[0]
    benchmark.pedantic(F.extract_features, args=(x, ext), kwargs={"batch_size": 256}, rounds=5, iterations=1,
                       warmup_rounds=1)


@pytest.mark.parametrize("batch", [16])
def test_inception_features_random_weights(benchmark, batch, tmp_path):
    torch.set_num_threads(1)
    ext = F.InceptionExtractor(F.random_inception_weights(tmp_path / "random-inception.pth"), verify=False)
    x = F.to_uint8(torch.rand(batch, 3, 32, 32) * 2 - 1)[0]
    benchmark.pedantic(F.extract_features, args=(x, ext), kwargs={"batch_size": batch}, rounds=3, iterations=1,
                       warmup_rounds=1)


@pytest.mark.parametrize("d", [64, 2048])
def test_fid_statistic(benchmark, d):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(0)
    a = fid_features_to_statistics(torch.randn(4 * d, d, generator=g))
    b = fid_features_to_statistics(torch.randn(4 * d, d, generator=g) * 1.1)
    benchmark.pedantic(fid_statistics_to_metric, args=(a, b, False), rounds=1 if d > 512 else 5, iterations=1)
