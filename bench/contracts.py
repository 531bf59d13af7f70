"""What ``bench test-plugin`` checks of a target, an energy or a metric, as the suite checks its own (an
algorithm's checks are bench/learning.py's). Each check is a line (check, passed, detail); ``None`` for passed
means the check does not apply (it says why).

A target must state its truth right:

- its samples are finite points of its dimension, and its held-out set is fixed;
- where it has a density: ``log_prob`` integrates to 1 (on its box by a grid in 1-D and 2-D; in more dimensions
  by importance sampling from a Gaussian mixture fitted to its own samples, one component per mode, with a
  standard error), and its samples agree with it (the mean and second moment of every coordinate of its exact
  samples against the same moments under ``log_prob``, within 5 standard errors);
- where it has modes: its stated ``mode_weights`` match the share of its exact samples that ``assign`` puts in
  each region (within 5 binomial standard errors and 0.005; for a partition read by a classifier, also its
  held-out error rate).

An energy must be a function the samplers and the evaluation can use: U(x) of shape (n,), finite, the same for
a point whatever the batch around it, in float32 and float64; gradients in x and in its parameters; the work
counted; and, where it claims an exact log Z, exact samples or its own mode weights, those must be right (on a
2-D grid).

A metric must be computed where its needs are: on a small trained model (ULA-EBM on the 2:1 mixture), after
training and, when declared ``trace``, along training, with finite values, the same twice.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from metrics.density import grid, grid_log_normalizer
from metrics.modes import sample_mode_weights

#: samples drawn by the target checks (their standard errors scale as 1 / sqrt(N))
N_SAMPLES = 20_000
#: grid nodes per axis for the 1-D / 2-D integrals
GRID_1D, GRID_2D = 20_000, 400
#: a check passes within this many standard errors
Z_TOL = 5.0


def _line(check: str, ok, detail: str) -> tuple[str, bool | None, str]:
    return check, ok if ok is None else bool(ok), detail


# ------------------------------------------------------------------------------------------------- targets
def _box_grid(t):
    """Nodes and cell volume of a grid over the target's 1-D or 2-D box (float64)."""
    if t.dim == 1:
        (lo, hi), = t.box
        h = (hi - lo) / GRID_1D
        return (lo + h * (torch.arange(GRID_1D, dtype=torch.float64) + 0.5))[:, None], h
    return grid(t.box, GRID_2D, dtype=torch.float64)


def _fitted_mixture(t, x: torch.Tensor):
    """A Gaussian mixture fitted to exact samples x (one diagonal component per mode region, else one): the
    importance-sampling proposal of the density checks in more than 2 dimensions. Returns (sample, log_prob)."""
    labels = t.assign(x.float()).long() if t.has("modes") else torch.zeros(len(x), dtype=torch.long)
    ks = [k for k in labels.unique().tolist() if (labels == k).sum() >= 10]
    w = torch.tensor([(labels == k).double().mean() for k in ks])
    w = w / w.sum()
    mu = torch.stack([x[labels == k].mean(0) for k in ks])
    sd = torch.stack([x[labels == k].std(0) for k in ks]).clamp_min(1e-6) * 1.1  # a little wider than the fit

    def log_q(y):
        comp = (-0.5 * ((y[:, None] - mu) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(comp + w.log(), -1)

    def sample(n, g):
        k = torch.multinomial(w, n, replacement=True, generator=g)
        return mu[k] + sd[k] * torch.randn(n, x.shape[1], generator=g, dtype=torch.float64)

    return sample, log_q


def _density_checks(t, x: torch.Tensor, g) -> list:
    """``log_prob`` integrates to 1; the moments of the exact samples x match those under ``log_prob``."""
    out = []
    if t.dim <= 2:
        nodes, vol = _box_grid(t)
        logp = t.log_prob(nodes)
        log_z = grid_log_normalizer(logp, vol)
        nodes_text = f"{GRID_2D}x{GRID_2D}" if t.dim == 2 else str(GRID_1D)
        out.append(_line("log_prob integrates to 1 on its box", abs(log_z) < 0.01,
                         f"log of the integral {log_z:.4g} on a {nodes_text} grid over the box (tolerance 0.01)"))
        p = torch.softmax(logp, 0)
        moments = [(p[:, None] * nodes).sum(0), (p[:, None] * nodes**2).sum(0)]
        extra_var = [torch.zeros(t.dim, dtype=torch.float64)] * 2
    else:
        sample, log_q = _fitted_mixture(t, x)
        y = sample(N_SAMPLES, g)
        log_w = t.log_prob(y) - log_q(y)
        w = torch.exp(log_w - log_w.max())
        ess = float(w.sum() ** 2 / (w**2).sum())
        z = float(log_w.max() + torch.log(w.mean()))
        se = float(w.std() / w.mean() / math.sqrt(N_SAMPLES))  # standard error of log Z (delta method)
        if ess < 0.05 * N_SAMPLES:
            out.append(_line("log_prob integrates to 1", None, f"cannot tell: importance sampling from a mixture "
                             f"fitted to its samples has an ESS of {ess:.0f} of {N_SAMPLES}"))
            return out
        out.append(_line("log_prob integrates to 1", abs(z) < max(0.02, Z_TOL * se),
                         f"log of the integral {z:.4g} ± {se:.2g} by importance sampling ({N_SAMPLES} draws from a "
                         f"mixture fitted to its samples, ESS {ess:.0f}; tolerance max(0.02, {Z_TOL:g} SE))"))
        p = w / w.sum()
        moments = [(p[:, None] * y).sum(0), (p[:, None] * y**2).sum(0)]
        extra_var = [(p[:, None] ** 2 * (f - m) ** 2).sum(0) for f, m in ((y, moments[0]), (y**2, moments[1]))]
    worst, where = 0.0, ""
    for i, (name, f) in enumerate((("mean", x), ("second moment", x**2))):
        se = torch.sqrt(f.var(0) / len(x) + extra_var[i]).clamp_min(1e-12)
        zs = ((f.mean(0) - moments[i]) / se).abs()
        j = int(zs.argmax())
        if float(zs[j]) > worst:
            worst, where = float(zs[j]), f"{name} of coordinate {j}: samples {float(f.mean(0)[j]):.4g}, " \
                                         f"log_prob {float(moments[i][j]):.4g}"
    out.append(_line("its samples agree with log_prob", worst < Z_TOL,
                     f"largest difference of a coordinate's mean or second moment: {worst:.2g} standard errors "
                     f"({where}; tolerance {Z_TOL:g})"))
    return out


def check_target(t) -> list[tuple[str, bool | None, str]]:
    """Every check of a target instance (module docstring)."""
    g = torch.Generator().manual_seed(0)
    checks = []
    try:
        x = t.sample(N_SAMPLES, g).double()
    except Exception as e:  # noqa: BLE001  (a user's target: its fault is the check's result)
        return [_line("draws exact samples", False, f"sample({N_SAMPLES}) raised {type(e).__name__}: {e}")]
    ok = tuple(x.shape) == (N_SAMPLES, t.dim) and bool(torch.isfinite(x).all())
    checks.append(_line("draws finite samples (n, dim)", ok, f"sample({N_SAMPLES}) has shape {tuple(x.shape)}"))
    if not ok:
        return checks
    a, b = t.test_set(100), t.test_set(100)
    checks.append(_line("its held-out set is fixed", torch.equal(a, b), "test_set(100) twice: the same points"
                        if torch.equal(a, b) else "test_set(100) twice: different points"))
    if t.has("density"):
        checks += _density_checks(t, x, g)
    else:
        checks.append(_line("log_prob", None, "no density stated (has_density = False): nothing to check"))
    if t.has("modes"):
        w = t.mode_weights.numpy()
        share = sample_mode_weights(t.assign(x.float()), t.n_modes)
        slack = 0.005 + ((1 - t.classifier().accuracy) if t.has("classifier") else 0.0)
        tol = Z_TOL * np.sqrt(w * (1 - w) / N_SAMPLES) + slack
        k = int(np.argmax(np.abs(share - w) - tol))
        ok = bool(np.all(np.abs(share - w) <= tol))
        checks.append(_line("its stated mode weights match assign on its samples", ok,
                            f"mode {k}: stated {w[k]:.4g}, share of {N_SAMPLES} samples {share[k]:.4g} "
                            f"(tolerance {tol[k]:.2g})"))
    return checks


# ------------------------------------------------------------------------------------------------- energies
def check_energy(cls) -> list[tuple[str, bool | None, str]]:
    """Every check of an energy class (module docstring), on 2-D points or on 8x8 grey images."""
    from algorithms.energies import has_exact_log_z, samples_exactly, states_mode_weights
    from algorithms.work import Work

    image = getattr(cls, "image", False)
    dim, shape = (64, (1, 8, 8)) if image else (2, None)
    try:
        torch.manual_seed(0)
        e = cls(dim, shape) if image else cls(dim)
    except Exception as e:  # noqa: BLE001
        return [_line("builds", False, f"{cls.__name__}({dim}{', ' + str(shape) if image else ''}) raised "
                      f"{type(e).__name__}: {e}")]
    checks = [_line("builds", True, f"{cls.__name__}({dim}{', ' + str(shape) if image else ''}): "
                    f"{sum(p.numel() for p in e.parameters())} parameters")]
    x = torch.rand(16, dim) * 2 - 1
    try:
        with torch.no_grad():
            u = e(x)
            u5 = e(x[:5])
            u_again = e(x)
    except Exception as err:  # noqa: BLE001
        return checks + [_line("U(x) of shape (n,)", False, f"{type(err).__name__}: {err}")]
    checks.append(_line("U(x) of shape (n,), finite", tuple(u.shape) == (16,) and bool(torch.isfinite(u).all()),
                        f"U of 16 points: shape {tuple(u.shape)}"))
    if tuple(u.shape) != (16,):
        return checks
    same = torch.allclose(u[:5], u5, rtol=1e-5, atol=1e-5) and torch.equal(u, u_again)
    checks.append(_line("a point's energy does not depend on its batch", same,
                        f"U(x[:5]) vs U(x)[:5]: largest difference {float((u[:5] - u5).abs().max()):.2g}; "
                        "U(x) twice: " + ("equal" if torch.equal(u, u_again) else "different")))
    try:
        e64 = cls(dim, shape) if image else cls(dim)
        e64.load_state_dict(e.state_dict())
        e64 = e64.double()
        with torch.no_grad():
            u64 = e64(x.double())
        ok = u64.dtype == torch.float64 and torch.allclose(u64.float(), u, rtol=1e-4, atol=1e-4)
        checks.append(_line("runs in float64 as in float32", ok, f"dtype {u64.dtype}"))
    except Exception as err:  # noqa: BLE001
        checks.append(_line("runs in float64 as in float32", False, f"{type(err).__name__}: {err}"))
    work = Work()
    try:
        _, gx = e.value_and_grad(x, work)
        params = [p for p in e.parameters() if p.requires_grad]
        e.zero_grad()
        e(x).sum().backward()
        gp = [p.grad for p in params if p.grad is not None]
        ok = (tuple(gx.shape) == tuple(x.shape) and bool(torch.isfinite(gx).all()) and work.grad_evals == 16
              and bool(params) and all(bool(torch.isfinite(g).all()) for g in gp))
        checks.append(_line("gradients in x and in its parameters, work counted", ok,
                            f"grad_x {tuple(gx.shape)}, {len(gp)} of {len(params)} parameters with a finite gradient, "
                            f"{work.grad_evals} gradient evaluations counted for 16 points"))
    except Exception as err:  # noqa: BLE001
        checks.append(_line("gradients in x and in its parameters, work counted", False,
                            f"{type(err).__name__}: {err}"))
    if image or not (has_exact_log_z(e) or samples_exactly(e) or states_mode_weights(e)):
        return checks
    pts, area = grid(((-12.0, 12.0), (-12.0, 12.0)), 600, dtype=torch.float64)
    with torch.no_grad():
        logu = -e.double()(pts)
    if has_exact_log_z(e):
        with torch.no_grad():
            got, want = grid_log_normalizer(logu, area), float(e.log_z())
        checks.append(_line("its exact log Z is right", abs(got - want) < 1e-3,
                            f"log_z() {want:.6g}, on a grid over [-12, 12]^2 {got:.6g}"))
    if samples_exactly(e):
        s = e.sample_exact(N_SAMPLES).double()
        p = torch.softmax(logu, 0)
        m = (p[:, None] * pts).sum(0)
        se = s.std(0) / math.sqrt(N_SAMPLES)
        zmax = float(((s.mean(0) - m) / se).abs().max())
        checks.append(_line("its exact samples follow exp(-U)", zmax < Z_TOL,
                            f"mean of {N_SAMPLES} samples vs the grid's: {zmax:.2g} standard errors"))
    if states_mode_weights(e):
        w = e.mode_weights().double()
        checks.append(_line("its mode weights sum to 1", abs(float(w.sum()) - 1) < 1e-9, f"{w.tolist()}"))
    return checks


# ------------------------------------------------------------------------------------------------- metrics
def check_metric(m, n_iters: int = 30) -> list[tuple[str, bool | None, str]]:
    """Train ULA-EBM on the 2:1 two-mode mixture for ``n_iters`` iterations and evaluate it with small settings:
    the metric must appear (after training, and at a trace point when declared ``trace``) with finite values,
    the same when computed twice."""
    import algorithms
    import datasets
    from algorithms.base import Problem, build_config
    from algorithms.energies import make_energy
    from algorithms.work import Work
    from bench.evaluation import Probe, Quantities, evaluate, measure, trace_point
    from bench.suite import TrainConfig
    from metrics import catalogue
    from metrics.catalogue import QUANTITIES

    if m.compute is None:
        return [_line("computed by the evaluation", None, f"reported by the {m.reported_by}, not computed: nothing to "
                      "check")]
    if catalogue.METRICS.get(m.name) is not m:  # a module:Object not registered: measured for this check only
        saved = catalogue.METRICS
        catalogue.METRICS = {**saved, m.name: m}
        try:
            return check_metric(m, n_iters)
        finally:
            catalogue.METRICS = saved
    torch.manual_seed(0)
    target = datasets.get_target("two_mode")
    data = target.sample(2048, torch.Generator().manual_seed(1))
    cfg = TrainConfig(n_data=2048, batch_size=128, n_iters=n_iters, eval_grid=60, trace_grid=30, n_eval_samples=500,
                      n_chains=8, n_draws=20, burn_in=5, n_negatives=512, n_model_samples=2000)
    energy = make_energy("toy_mlp", 2)
    cls = algorithms.ALGORITHMS["ula_ebm"]
    alg = cls(Problem(target, data, work=Work()), energy,
              build_config(cls.Config, {"n_persistent": 256, "n_steps": 10, "step_size": 0.01}, "tiny case"))
    for i in range(n_iters):
        alg.step(data[(i * 128) % 2048:(i * 128) % 2048 + 128])
    probe = Probe(target, energy, cfg, torch.device("cpu"))
    q = Quantities(probe, alg, cfg.eval_grid)
    missing = [n for n in m.needs if q[n] is None]
    if missing:
        return [_line("computed on the tiny case", None, f"needs {', '.join(missing)}, which the tiny case (ULA-EBM "
                      f"on the 2-D two_mode mixture) does not have: {QUANTITIES[missing[0]][1]}")]
    values, _ = evaluate(Probe(target, energy, cfg, torch.device("cpu")), alg)
    mine = {k: v for k, v in values.items() if k == m.name or (m.pattern is not None and m.pattern.fullmatch(k))}
    checks = [_line("computed after training, finite", bool(mine) and all(np.isfinite(v) for v in mine.values()),
                    ", ".join(f"{k} = {v:.4g}" for k, v in mine.items()) or "not among the results")]
    again = m.values(*(q[n] for n in m.needs))
    checks.append(_line("a function of its needs (the same twice)", again == m.values(*(q[n] for n in m.needs)),
                        f"{again}"))
    if m.trace:
        point = trace_point(probe, alg)
        if m.stage == "chains":  # measured at the rhat_every-th trace points
            point = measure(Quantities(probe, alg, final=False, chains=True), "chains")
        got = {k: v for k, v in point.items() if k == m.name or (m.pattern is not None and m.pattern.fullmatch(k))}
        checks.append(_line("measured along training (trace)", bool(got) and all(np.isfinite(v) for v in got.values()),
                            ", ".join(f"{k} = {v:.4g}" for k, v in got.items()) or "not at a trace point"))
    return checks


__all__ = ["check_energy", "check_metric", "check_target"]
