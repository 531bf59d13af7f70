"""Evaluation: turn a trained model into numbers.

Everything measured of a model on a target lives here, decided from their capabilities (``Probe``): a 2-D
target is integrated on a grid; an energy with an exact ``log_z`` or ``sample_exact`` is used directly; a
teacher-student target compares parameters. ``trace_point`` is what is logged during training,
``evaluate`` what is measured after it. The metrics themselves are pure functions in ``metrics/``.

Models that are not densities on the box. A 2-D model is normalised on the target's box (000 Table 1), so mass
it puts outside the box is dropped from every grid metric, and an untilted EBM (ULA-EBM, CD, short-run,
CoopFlow) can be improper. Every run normalised on a grid therefore also reports

* ``mass_outside_box``: the fraction of the model's mass on a box ``LEAK_FACTOR`` = 3 times as wide per axis
  (same centre) that lies outside the evaluation box (a coarser grid, ``LEAK_COARSENING``). For an improper
  model it grows with the enlarged box: it is a lower bound on the leak, not a property of the model alone;
* ``border_density_ratio``: the model's largest density on the outermost ring of evaluation-grid cells over
  its largest density on the grid (1: the density peaks on the border);
* ``improper``: 1.0 when ``mass_outside_box`` > ``LEAK_TOL`` (or cannot be computed), else 0.0. The mode
  weights, log-density error, KL and test log-likelihood of such a model are those of its restriction to the
  box, not of a density: tables and figures mark them.

Evaluation chains (R-hat / ESS after training) run ``burn_in + n_draws`` steps of the algorithm's own sampler
with its step-size adaptation frozen and drop the first ``burn_in`` draws. Algorithms whose chains are
deterministic (``stochastic_chains = False``: CoopFlow's noise-free Langevin, 002's gradient descent and ODE)
get ``max_rhat_deterministic`` instead of ``max_rhat`` / ``max_rhat_classic`` / ``min_ess_bulk`` /
``min_ess_tail``.
"""

from __future__ import annotations

import numpy as np
import torch

from algorithms.base import Diverged
from algorithms.energies import has_exact_log_z, samples_exactly, states_mode_weights
from metrics.density import (
    border_density_ratio,
    enlarged_box,
    grid,
    grid_log_normalizer,
    inside_box,
    mass_outside,
    median_sq_log_density_error,
)
from metrics.mixing import classic_rhat, ess_bulk, ess_tail, rhat
from metrics.modes import grid_mode_weights, sample_mode_weights, weight_mse, weight_relative_error

#: a model with more than this fraction of its mass (on the 3x box) outside the evaluation box is ``improper``:
#: its grid metrics describe its restriction to the box (ours: 1 %, well above what the 2-D targets themselves
#: put outside their boxes, at most 1.4e-6 for two_mode, and far below the 96 % seen of CoopFlow's quick setting)
LEAK_TOL = 0.01
#: the enlarged box is this many times as wide per axis as the evaluation box (same centre)
LEAK_FACTOR = 3
#: its cells are this many times as wide as the evaluation grid's (at least LEAK_MIN_CELLS per box width)
LEAK_COARSENING = 4
LEAK_MIN_CELLS = 8


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
        #: metric -> the protocol of its FID / KID / IS value (``FidelityProtocol.as_dict()``), for the result rows
        self.protocols: dict[str, dict] = {}
        self._extractor = self._fid_trace = None

    def classifier_extractor(self):
        """The target's classifier as a feature extractor (metrics/fidelity.py), built once per run."""
        if self._extractor is None:
            from metrics.fidelity import ClassifierExtractor

            self._extractor = ClassifierExtractor.from_classifier(self.target.classifier())
        return self._extractor

    def fid_trace(self):
        """FID over training (``FidelityTrace``): the classifier features of ``reference_images`` computed once."""
        if self._fid_trace is None:
            from metrics.fidelity import FidelityTrace

            ref, split = self.target.reference_images()
            self._fid_trace = FidelityTrace(ref, extractor=self.classifier_extractor(), reference_split=split,
                                            metrics=("fid",), shape=self.target.shape, device=_fid_device(self.device))
        return self._fid_trace

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
        """Share of ``n_model_samples`` exact model samples in each mode's region (nearest teacher mode); where
        the model is a mixture of unit-covariance Gaussians and the target gives its regions' masses for one
        (the 003 student on the two-mode teacher), the exact mass instead, the share's limit (no sampling)."""
        t = self.target
        if not (t.has_modes and samples_exactly(self.energy)):
            return None
        if hasattr(self.energy, "unit_components") and hasattr(t, "region_masses"):
            return t.region_masses(*self.energy.unit_components()).numpy()
        x = self.energy.sample_exact(self.cfg.n_model_samples).cpu()
        return sample_mode_weights(t.assign(x), t.n_modes)

    def leak(self, n_grid: int, grid_pts) -> dict[str, float]:
        """``mass_outside_box``, ``border_density_ratio`` and ``improper`` (module docstring) of a model
        normalised on the n_grid x n_grid evaluation grid ``grid_pts``. The enlarged grid has LEAK_FACTOR * m
        cells per axis, m = max(n_grid // LEAK_COARSENING, LEAK_MIN_CELLS), so the evaluation box is exactly
        its middle m x m cells."""
        box = self.target.box
        m = max(n_grid // LEAK_COARSENING, LEAK_MIN_CELLS)
        pts, _, logu_outer = _ebm_grid(self.energy, enlarged_box(box, LEAK_FACTOR), LEAK_FACTOR * m, self.device)
        frac = mass_outside(logu_outer, inside_box(pts, box))
        ratio = border_density_ratio(grid_pts[2].reshape(n_grid, n_grid))
        return {"mass_outside_box": frac, "border_density_ratio": ratio, "improper": float(not frac <= LEAK_TOL)}

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
        if grid_pts is not None:
            out.update(self.leak(n_grid, grid_pts))
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
    if hasattr(t, "label_metrics"):
        drawn = finite_images(alg.draw_negatives(probe.cfg.n_negatives).cpu())
        out.update(label_point(probe, alg, drawn))
        if has_sample_quality(t):
            out.update(probe.fid_trace()(drawn.float()))  # FID over training, on the images just labelled
    return out


def label_point(probe: Probe, alg, drawn=None) -> dict[str, float]:
    """Image targets (datasets/images.py): class weights of the generated samples read by the suite's classifier
    (003 §4.2, Fig. 3). Weighted walkers (Jarzynski) count with their normalised weights, as 003 reads them;
    other algorithms give ``n_negatives`` samples drawn as they draw negatives (``drawn`` when the caller has them,
    else ``draw_negatives``)."""
    w = alg.negative_weights()
    if w is not None:
        x = alg.negatives()
    else:
        x = drawn if drawn is not None else alg.draw_negatives(probe.cfg.n_negatives)
    return probe.target.label_metrics(x.cpu(), None if w is None else w.cpu())


def rhat_point(probe: Probe, alg, it: int, last: bool) -> dict[str, float]:
    """Mixing of the algorithm's own sampler during training (000 Fig. 6: R-hat along training): the
    diagnostics of ``evaluate``'s evaluation chains (``evaluation_chains``, ``mixing``: n_chains chains from
    ``chain_starts``, burn_in + n_draws steps, adaptation frozen) at every ``rhat_every``-th trace point and at
    the last one; empty elsewhere (it costs n_chains x (burn_in + n_draws) sampler steps)."""
    cfg = probe.cfg
    k = cfg.rhat_every
    if not k or cfg.n_chains < 2 or cfg.n_draws < 4 or not (last or (it // cfg.eval_every) % k == 0):
        return {}
    chains = evaluation_chains(alg, cfg.n_chains, cfg.n_draws, cfg.burn_in)
    if not np.isfinite(chains).all():
        raise Diverged(-1, "non-finite states in the evaluation chains")
    return mixing(chains, alg.stochastic_chains)


def has_sample_quality(target) -> bool:
    """Image targets with a classifier and ``fidelity_metrics``: FID / IS after and along training."""
    return hasattr(target, "classifier") and getattr(target, "fidelity_metrics", False)


def finite_images(x):
    """``x``, or ``Diverged`` when a generated image has a non-finite pixel (a run's outcome, not an error)."""
    if not torch.isfinite(x).all():
        raise Diverged(-1, "non-finite pixels in the generated images")
    return x


def _fid_device(device) -> str:
    return "cuda" if getattr(device, "type", str(device)).startswith("cuda") else "cpu"


def image_fidelity(probe: Probe, negs) -> dict[str, float]:
    """Sample quality of generated images (targets with ``fidelity_metrics``): FID and IS with the suite's classifier
    as feature extractor (``fid_classifier``, ``is_classifier_mean``: on any data, CPU), and Inception FID / IS
    (``fid_inception``, the papers' metric) when a local Inception weights file is given (``run
    --inception-weights``). The reference is the target's ``reference_images``: its held-out images, each once, raw
    pixels. The generated images are ``negs``, the ``n_negatives`` drawn after training as the algorithm draws
    negatives (Jarzynski: its walkers resampled by their weights). Images are in [-1, 1]. Each value's protocol
    (extractor, counts, split, pixel quantisation: metrics/fidelity.py's FidelityProtocol) is kept in
    ``probe.protocols`` and stored with its result row."""
    import os

    from metrics.fidelity import ENV_INCEPTION_WEIGHTS, InceptionExtractor, sample_quality

    target = probe.target
    ref, split = target.reference_images()
    extractors = [probe.classifier_extractor()]
    if os.environ.get(ENV_INCEPTION_WEIGHTS):
        extractors.append(InceptionExtractor(os.environ[ENV_INCEPTION_WEIGHTS]))
    out: dict[str, float] = {}
    for ext in extractors:
        q = sample_quality(negs.float(), ref, extractor=ext, reference_split=split, metrics=("fid", "is"),
                           value_range=(-1.0, 1.0), shape=target.shape, device=_fid_device(probe.device))
        values = {k: float(v) for k, v in q.metrics.items() if isinstance(v, int | float)}
        out.update(values)
        probe.protocols.update(dict.fromkeys(values, q.protocol.as_dict()))
    return out


def energy_point(probe: Probe, negs) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Energies of the generated images against those of held-out data (000 Fig. 7, after Dai et al. 2019; the
    held-out set, not the training set, so that an energy fitted to its training images is not flattered):
    ``energy_overlap``, ``energy_w1``, ``energy_mean_gap``, ``energy_std_ratio`` (metrics/fidelity.py
    ``energy_histograms``), and both sets of energies for the figure."""
    from metrics.fidelity import energy_histograms

    e_neg = _energy_on(probe.energy, negs, probe.device)
    e_data = _energy_on(probe.energy, probe.test, probe.device)
    if not (torch.isfinite(e_neg).all() and torch.isfinite(e_data).all()):
        raise Diverged(-1, "non-finite energies of the generated or held-out images")
    hist = energy_histograms(e_neg, e_data)
    return hist.metrics, {"energy_negatives": e_neg.float().numpy(), "energy_data": e_data.float().numpy()}


def evaluate(probe: Probe, alg) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All metrics the target's ground truth allows, and arrays for the plots."""
    target, cfg, device = probe.target, probe.cfg, probe.device
    art: dict[str, np.ndarray] = {}
    probe.energy.eval()
    m, grid_pts = probe.measure(alg, cfg.eval_grid)
    negs = alg.draw_negatives(cfg.n_negatives).cpu()
    art["negatives"] = negs[:2000].float().numpy()
    if has_sample_quality(target):
        m.update(image_fidelity(probe, finite_images(negs)))
        em, ea = energy_point(probe, negs)
        m.update(em)
        art.update(ea)
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
    if hasattr(target, "label_metrics"):
        m.update(label_point(probe, alg, negs))
    m.update(alg.extra_metrics(probe.test.to(device=device, dtype=dtype_of(probe.energy))))
    art.update(alg.extra_artifacts(target.box, cfg.eval_grid))
    if cfg.n_chains > 1 and cfg.n_draws >= 4:
        chains = evaluation_chains(alg, cfg.n_chains, cfg.n_draws, cfg.burn_in)
        if not np.isfinite(chains).all():
            raise Diverged(-1, "non-finite states in the evaluation chains")
        m.update(mixing(chains, alg.stochastic_chains))
    return m, art


def evaluation_chains(alg, n_chains: int, n_draws: int, burn_in: int) -> np.ndarray:
    """(chain, draw, dim) draws of the algorithm's own sampler from its chain starts (000 Table 2: 128 chains
    from the persistent state, or from the flow for CoopFlow): ``burn_in + n_draws`` steps, adaptation frozen
    (``TrainingAlgorithm.run_chains``), the first ``burn_in`` dropped."""
    chains = alg.run_chains(alg.chain_starts(n_chains), burn_in + n_draws)
    if chains.shape[1] != burn_in + n_draws:
        raise ValueError(f"{alg.name}.run_chains returned {chains.shape[1]} draws, asked for {burn_in + n_draws}")
    return chains[:, burn_in:].cpu().double().numpy()


def mixing(chains: np.ndarray, stochastic: bool) -> dict[str, float]:
    """R-hat and ESS of evaluation chains (000 Table 2, 001 Fig. 2; metrics/mixing.py).

    Deterministic chains (noise-free dynamics) give only ``max_rhat_deterministic``, the largest split R-hat
    over dimensions: it measures how the chains collapse to fixed points (inf when they stop at different
    points, NaN when all stop at one), not mixing; it is not comparable with ``max_rhat``."""
    if not stochastic:
        r = rhat(chains)
        return {"max_rhat_deterministic": float(np.nanmax(r)) if not np.isnan(r).all() else float("nan")}
    return {"max_rhat": float(rhat(chains).max()),
            "max_rhat_classic": float(classic_rhat(chains).max()),
            "min_ess_bulk": float(ess_bulk(chains).min()),
            "min_ess_tail": float(ess_tail(chains).min())}
