"""Evaluation: turn a trained model into numbers.

Everything measured of a model on a target lives here, decided from their capabilities (``Probe``): a 2-D
target is integrated on a grid; an energy with an exact ``log_z`` or ``sample_exact`` is used directly; a
teacher-student target compares parameters. ``trace_point`` is what is logged during training,
``evaluate`` what is measured after it. The metrics themselves are pure functions in ``metrics/``.
"""

from __future__ import annotations

import numpy as np
import torch

from algorithms.base import Diverged
from algorithms.energies import has_exact_log_z, samples_exactly, states_mode_weights
from metrics.density import grid, grid_log_normalizer, median_sq_log_density_error
from metrics.mixing import classic_rhat, ess_bulk, ess_tail, rhat
from metrics.modes import grid_mode_weights, sample_mode_weights, weight_mse, weight_relative_error


def dtype_of(energy) -> torch.dtype:
    return next(energy.parameters()).dtype


def _ebm_grid(energy, box, n, device):
    pts, area = grid(box, n)
    return pts, area, -_energy_on(energy, pts, device)


def _energy_on(energy, x, device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([energy(c.to(device=device, dtype=dtype_of(energy))).double().cpu()
                          for c in x.split(65536)])


class Probe:
    """What can be measured of a model on a target, decided once from their capabilities:
    a 2-D target is integrated on a grid; an energy with an exact ``log_z`` or ``sample_exact`` is used
    directly; a teacher-student target compares parameters."""

    def __init__(self, target, energy, cfg, device):
        self.target, self.energy, self.cfg, self.device = target, energy, cfg, device
        self.test = target.test_set(cfg.n_eval_samples)
        self.log_true = target.log_prob(self.test.double()) if target.has_density else None
        self.exact_log_z = has_exact_log_z(energy)
        self.on_grid = target.dim == 2
        self._true_log_z: dict[int, float] = {}

    def model_log_z(self, n_grid: int):
        """log Z of the model and, on a grid, (points, log-density) for plots and mode weights."""
        if self.exact_log_z:
            with torch.no_grad():
                return float(self.energy.log_z()), None
        if self.on_grid:
            pts, area, logu = _ebm_grid(self.energy, self.target.box, n_grid, self.device)
            if not torch.isfinite(logu).all():
                raise Diverged(-1, "non-finite energy on the evaluation grid")
            return grid_log_normalizer(logu, area), (pts, area, logu)
        return None, None

    def model_weights(self, grid_pts, share):
        """The model's mode weights: the mass of each mode's region on the grid, else the weights a parametric
        energy states (the 003 student's sigma(z)), else the share of exact samples (``share``)."""
        t = self.target
        if not t.has_modes:
            return None
        if grid_pts is not None:
            pts, _, logu = grid_pts
            return grid_mode_weights(logu, t.assign(pts), t.n_modes)
        if states_mode_weights(self.energy):
            w = self.energy.mode_weights().double().cpu().numpy()
            if w.shape == (t.n_modes,):
                return w
        return share

    def sample_share(self):
        """Share of ``n_model_samples`` exact model samples in each mode's region (nearest teacher mode)."""
        t = self.target
        if not (t.has_modes and samples_exactly(self.energy)):
            return None
        x = self.energy.sample_exact(self.cfg.n_model_samples).cpu()
        return sample_mode_weights(t.assign(x), t.n_modes)

    def true_grid_log_z(self, n_grid: int, grid_pts) -> float:
        """log Z of p* on the evaluation grid (000 Table 1 normalises both densities on the same grid); it
        depends on the grid alone, so it is computed once per resolution."""
        if n_grid not in self._true_log_z:
            pts, area, _ = grid_pts
            self._true_log_z[n_grid] = grid_log_normalizer(self.target.log_prob(pts.double()), area)
        return self._true_log_z[n_grid]

    def measure(self, alg, n_grid: int) -> tuple[dict[str, float], object]:
        """Mode weights, test log-likelihood, KL(p* || p_theta) and its estimate, teacher-parameter errors."""
        out: dict[str, float] = {}
        log_z, grid_pts = self.model_log_z(n_grid)
        share = self.sample_share()
        w = self.model_weights(grid_pts, share)
        if share is not None:
            for k, sk in enumerate(share):
                out[f"ebm_sample_share[{k}]"] = float(sk)
        if w is not None:
            for k, wk in enumerate(w):
                out[f"ebm_weight[{k}]"] = float(wk)
            out["ebm_weight_mse"] = weight_mse(w, self.target.mode_weights.numpy())  # 000 Table 3, col. 4
        u_test = _energy_on(self.energy, self.test, self.device)
        if log_z is not None:
            logp_model = -u_test - log_z
            out["test_loglik"] = float(logp_model.mean())
            if self.log_true is not None:
                true_log_z = 0.0 if grid_pts is None else self.true_grid_log_z(n_grid, grid_pts)
                out["logp_median_sq_error"] = median_sq_log_density_error(logp_model, self.log_true - true_log_z)
                out["kl"] = float((self.log_true - logp_model).mean())
        est = alg.log_z_estimate()
        if est is not None and self.log_true is not None:
            # 003 eq. (12): H~ = log Z~ + E*[U]; KL~ = H~ - H(p*), both expectations on the same test set
            out["kl_estimate"] = float(est + u_test.mean() + self.log_true.mean())
            if log_z is not None:
                out["log_z_error"] = float(est - log_z)
        if hasattr(self.target, "teacher_params"):
            named = dict(self.energy.named_parameters())
            for name, true in self.target.teacher_params().items():
                if name in named:
                    diff = named[name].detach().double().cpu() - torch.as_tensor(true, dtype=torch.float64)
                    out[f"param_error[{name}]"] = float(diff.norm())
        return out, grid_pts


def trace_point(probe: Probe, alg) -> dict[str, float]:
    out, _ = probe.measure(alg, probe.cfg.trace_grid)
    out.pop("logp_median_sq_error", None)
    neg, t = alg.negatives(), probe.target
    if t.has_modes and neg is not None:
        for k, w in enumerate(sample_mode_weights(t.assign(neg.cpu()), t.n_modes, alg.negative_weights())):
            out[f"neg_weight[{k}]"] = float(w)
    return out


def rhat_point(probe: Probe, alg, it: int, last: bool) -> dict[str, float]:
    """Mixing of the algorithm's own sampler during training (000 Fig. 6: R-hat along training): the
    evaluation-chain diagnostics of ``evaluate`` (n_chains chains from ``chain_starts``, n_draws draws) at every
    ``rhat_every``-th trace point and at the last one; empty elsewhere (it costs n_chains x n_draws steps)."""
    cfg = probe.cfg
    k = cfg.rhat_every
    if not k or cfg.n_chains < 2 or cfg.n_draws < 4 or not (last or (it // cfg.eval_every) % k == 0):
        return {}
    chains = alg.run_chains(alg.chain_starts(cfg.n_chains), cfg.n_draws).cpu().double().numpy()
    if not np.isfinite(chains).all():
        raise Diverged(-1, "non-finite states in the evaluation chains")
    return {"max_rhat": float(rhat(chains).max()), "max_rhat_classic": float(classic_rhat(chains).max()),
            "min_ess_bulk": float(ess_bulk(chains).min()), "min_ess_tail": float(ess_tail(chains).min())}


def evaluate(probe: Probe, alg) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All metrics the target's ground truth allows, and arrays for the plots."""
    target, cfg, device = probe.target, probe.cfg, probe.device
    art: dict[str, np.ndarray] = {}
    probe.energy.eval()
    m, grid_pts = probe.measure(alg, cfg.eval_grid)
    negs = alg.draw_negatives(cfg.n_negatives).cpu()
    art["negatives"] = negs[:2000].float().numpy()
    if grid_pts is not None:
        pts, area, logu = grid_pts
        log_z = grid_log_normalizer(logu, area)
        art["grid_log_density"] = (logu - log_z).float().reshape(cfg.eval_grid, cfg.eval_grid).numpy()
        art["box"] = np.asarray(target.box, dtype=float)
    if target.has_modes:
        w_true = target.mode_weights.numpy()
        w_neg = sample_mode_weights(target.assign(negs), target.n_modes)
        for k in range(target.n_modes):
            m[f"neg_weight[{k}]"] = float(w_neg[k])
        m["neg_weight_mse"] = weight_mse(w_neg, w_true)
        if "ebm_weight[0]" in m:
            w_ebm = np.array([m[f"ebm_weight[{k}]"] for k in range(target.n_modes)])
            w_init = sample_mode_weights(target.assign(alg.chain_starts(cfg.n_negatives).cpu()), target.n_modes)
            for k, e in enumerate(weight_relative_error(w_ebm, w_true)):
                m[f"ebm_weight_relerr[{k}]"] = float(e)
            m["neg_weight_mse_vs_ebm"] = weight_mse(w_neg, w_ebm)  # 000 Table 3, column 3
            m["init_weight_mse_vs_ebm"] = weight_mse(w_init, w_ebm)  # 000 Table 3, column 2
    m.update(alg.extra_metrics(probe.test.to(device=device, dtype=dtype_of(probe.energy))))
    art.update(alg.extra_artifacts(target.box, cfg.eval_grid))
    if cfg.n_chains > 1 and cfg.n_draws >= 4:
        chains = alg.run_chains(alg.chain_starts(cfg.n_chains), cfg.n_draws).cpu().double().numpy()
        if not np.isfinite(chains).all():
            raise Diverged(-1, "non-finite states in the evaluation chains")
        m["max_rhat"] = float(rhat(chains).max())
        m["max_rhat_classic"] = float(classic_rhat(chains).max())
        m["min_ess_bulk"] = float(ess_bulk(chains).min())
        m["min_ess_tail"] = float(ess_tail(chains).min())
    return m, art
