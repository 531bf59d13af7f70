"""Every metric the suite reports, declared once.

A ``Metric`` is one declared unit: its name (or a name pattern with one placeholder, ``ebm_weight[k]``,
``param_error[name]``, ``fid_<extractor>``), what it says (``description``), what it is computed from
(``needs``: quantities an evaluation measures of a model, its target and its algorithm, named in QUANTITIES,
each available only where the target and the algorithm have what it takes), its pure ``compute`` function of
those quantities (called with them in the order of ``needs``), whether it is also measured along training
(``trace``), which way is better and how the regression gate compares it (``better``, ``gate``), how the headline
table labels it (``headline``), and whether it is a property of the model's normalised density (``density``:
tables leave it out of the means of improper models). bench/evaluation.py loops over the registered metrics;
the command line's metric list, the gate's rules (bench/check.py) and the headline columns (bench/tables.py)
are read from the same declarations. A user adds a metric as a plug-in: a ``Metric`` named in a suite file's
``[plugins.metrics]`` or in the entry-point group ``ebm_bench.metrics`` (README, "Bring your own metric").

``compute`` returns a number (the metric's value), None (not defined for this model: no row), or, for a
pattern, a sequence (one value per index k) or a dict (one value per key) that fills the placeholder. Metrics
``reported_by`` another part (the algorithm's own ``extra_metrics``, the runner) are declared here for their
description, gate and headline; their values come from that part.

The order of BUILT_IN is the order the headline table shows its columns in, and the order metrics are computed
within a stage (QUANTITIES' stages run in the order of STAGES: model, samples, algorithm, chains, audit). Random
numbers are drawn by quantities (exact model samples, negatives, chain starts, label samples, chains, the audit),
each when the first metric that needs it is computed, so this order is part of what a result is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metrics.classifier import relative_weight_error
from metrics.density import border_density_ratio, energy_spread, mass_outside, median_sq_log_density_error
from metrics.mixing import classic_rhat, ess_bulk, ess_tail, rhat
from metrics.modes import chain_mode_stay, weight_mse, weight_relative_error
from metrics.sample_quality import energy_histograms

#: a model with more than this fraction of its mass (on the 3x box) outside the evaluation box is ``improper``:
#: its grid metrics describe its restriction to the box (ours: 1 %, well above what the 2-D targets themselves
#: put outside their boxes, at most 1.4e-6 for two_mode, and far below the 96 % seen of CoopFlow's quick setting)
LEAK_TOL = 0.01

#: the stages of an evaluation, in the order they run
STAGES = ("model", "samples", "algorithm", "chains", "audit")

#: quantity -> (stage, what it is, where it is available). bench/evaluation.py measures each one, once per
#: evaluation, when the first metric that needs it is computed.
QUANTITIES: dict[str, tuple[str, str]] = {
    "true_weights": ("model", "the target's mode weights (numpy, float64); targets with modes"),
    "model_weights": ("model", "the model's mode weights: the mass of each mode's region on the evaluation grid "
                               "(2-D targets), else the weights a parametric energy states, else its sample_share; "
                               "targets with modes"),
    "sample_share": ("model", "the share of the model's exact samples in each mode's region (in closed form where "
                              "the target gives region masses); targets with modes, energies that sample exactly"),
    "grid_log_density": ("model", "the model's unnormalised log-density on the n x n evaluation grid, an (n, n) "
                                  "tensor; 2-D targets, models without an exact log Z"),
    "outer_grid": ("model", "(log-density, inside-the-box mask) on a grid over a box 3 times as wide; where "
                            "grid_log_density is"),
    "model_log_z": ("model", "log Z of the model: exact (an energy with log_z) or on the evaluation grid"),
    "test_energy": ("model", "U_theta at the target's fixed held-out samples (float64)"),
    "test_logp_model": ("model", "log p_theta = -U_theta - log Z at the held-out samples; where model_log_z is"),
    "test_logp_true": ("model", "log p* at the held-out samples; targets with a density"),
    "test_logp_true_grid": ("model", "log p* at the held-out samples, normalised the way the model is (on the "
                                     "evaluation grid, or exactly); targets with a density, where model_log_z is"),
    "grid_logp_model": ("model", "log p_theta at the evaluation grid's nodes, normalised on the grid; where "
                                 "grid_log_density is"),
    "grid_logp_true": ("model", "log p* at the evaluation grid's nodes, normalised on the grid; 2-D targets with a "
                                "density, where grid_log_density is"),
    "log_z_estimate": ("model", "the algorithm's own estimate of log Z (Jarzynski, 003 eq. 12)"),
    "teacher_params": ("model", "name -> true parameter of a teacher-student target"),
    "model_params": ("model", "name -> the energy's parameter (detached, float64)"),
    "negatives": ("samples", "after training: n_negatives samples drawn as the algorithm draws its negatives; "
                             "along training: its current negatives"),
    "negative_mode_weights": ("samples", "the negatives' mode weights (along training Jarzynski's walkers count "
                                         "with their weights); targets with modes"),
    "init_mode_weights": ("samples", "the mode weights of n_negatives chain starts; after training, targets with "
                                     "modes"),
    "label_weights": ("samples", "the weight of each class among generated images read by the target's classifier "
                                 "(walker weights summed per label, 003 §4.2); targets with a classifier"),
    "off_class_share": ("samples", "the share of those images the classifier puts outside the target's classes"),
    "classifier_accuracy": ("samples", "the classifier's held-out accuracy"),
    "quality": ("samples", "FID / IS of the generated images against the target's reference images: {'fid': "
                           "{extractor: value}, 'is_mean': {...}, 'is_std': {...}, 'out_of_range_frac': x, "
                           "'n_generated': n, 'n_reference': n}; along training the classifier FID alone; "
                           "sample_quality targets"),
    "image_energies": ("samples", "(energies of the generated images, energies of the held-out images), float64 "
                                  "(000 Fig. 7); sample_quality targets, after training"),
    "algorithm_metrics": ("algorithm", "what the algorithm reports of itself after training (extra_metrics)"),
    "chains": ("chains", "(chain, draw, dim) evaluation chains of the algorithm's own stochastic sampler "
                         "(burn-in dropped, adaptation frozen); after training, and at every rhat_every-th trace "
                         "point"),
    "deterministic_chains": ("chains", "the same for a noise-free sampler (stochastic_chains = False)"),
    "chain_modes": ("chains", "(chain, draw) mode-region labels of the stochastic evaluation chains; targets with "
                              "modes that are not images"),
    "audit": ("audit", "the independent audit of the EBM's mode weights (bench/audit.py): weights, chains and "
                       "acceptance rates; mixture targets with audit_chains > 0, after training"),
}


@dataclass(frozen=True)
class Gate:
    """How the regression gate (bench/check.py) compares a metric, whose ``better`` gives the direction:
    ``scale`` "log", z = log(max(x - lower, 0) + floor) (positive, multiplicatively noisy metrics; ``floor``: the
    resolution below which differences do not matter), or "linear", z = x (natural units); ``min_tol`` and ``cap``
    bound the tolerance on z (None: the gate's defaults)."""

    scale: str = "log"
    lower: float = 0.0
    floor: float = 0.0
    min_tol: float | None = None
    cap: float | None = None


@dataclass(frozen=True)
class Metric:
    """One metric (module docstring)."""

    name: str
    description: str
    needs: tuple[str, ...] = ()
    compute: Callable | None = None
    trace: bool = False
    better: int = 0
    gate: Gate | None = None
    headline: str | dict | None = None
    density: bool = False
    reported_by: str = ""

    @property
    def stage(self) -> str | None:
        """The stage it is computed in: the last stage of its needs."""
        stages = [STAGES.index(QUANTITIES[n][0]) for n in self.needs if n in QUANTITIES]
        return STAGES[max(stages)] if stages else None

    @property
    def pattern(self) -> re.Pattern | None:
        """For a name with a placeholder (``[k]``, ``<extractor>``), the regular expression of its instances."""
        parts = re.split(r"(\[[^\]]*\]|<[^>]*>)", self.name)
        if len(parts) == 1:
            return None
        return re.compile("".join(re.escape(p) if i % 2 == 0 else (r"\[(.+?)\]" if p.startswith("[") else "(.+?)")
                                  for i, p in enumerate(parts)))

    def instance(self, key) -> str:
        """The metric's name with its placeholder filled by ``key``."""
        return re.sub(r"\[[^\]]*\]|<[^>]*>", lambda m: f"[{key}]" if m.group().startswith("[") else str(key),
                      self.name, count=1)

    def headlines(self) -> dict[str, str]:
        """Instance name -> headline label."""
        if self.headline is None:
            return {}
        return dict(self.headline) if isinstance(self.headline, dict) else {self.name: self.headline}

    def values(self, *quantities) -> dict[str, float]:
        """``compute`` on the quantities, as {metric name: float}."""
        v = self.compute(*quantities)
        if v is None:
            return {}
        if isinstance(v, dict):
            return {self.instance(k): float(x) for k, x in v.items() if x is not None}
        if isinstance(v, list | tuple | np.ndarray):
            return {self.instance(k): float(x) for k, x in enumerate(v)}
        return {self.name: float(v)}


def reported(name: str) -> Callable:
    """The compute of a metric reported by the algorithm: its value in ``algorithm_metrics``."""
    return lambda m: m.get(name)


def _identity(x):
    return x


def _energy_statistic(name: str) -> Callable:
    """One of metrics.sample_quality.energy_histograms's numbers of (generated, held-out) energies."""
    return lambda energies: energy_histograms(*energies).metrics[name]


def _max(f):
    return lambda chains: float(f(chains).max())


def _min(f):
    return lambda chains: float(f(chains).min())


def _param_errors(teacher: dict, model: dict) -> dict:
    """|theta_name - theta*_name| of every teacher parameter the energy has (003's student)."""
    import torch

    return {n: float((model[n] - torch.as_tensor(t, dtype=torch.float64)).norm()) for n, t in teacher.items()
            if n in model}


def _deterministic_rhat(chains) -> float:
    r = rhat(chains)
    return float(np.nanmax(r)) if not np.isnan(r).all() else float("nan")


def _weights_or_none(audit):
    return audit.weights


#: a weight-MSE is resolved to 1e-5, R-hat - 1 to 0.01 (1.01: the usual convergence threshold), an ESS to 1 draw
_MSE, _ERR = Gate(floor=1e-5), Gate(floor=1e-3)
LOWER, HIGHER = -1, +1

BUILT_IN: list[Metric] = [
    # ---- the model: its mode weights, density and parameters (000 Tables 1 and 3, 003 Fig. 1)
    Metric("ebm_sample_share[k]", "share of the model's exact samples in mode k's region (in closed form where the "
           "target gives its regions' masses: the limit of the share)", ("sample_share",), _identity, trace=True),
    Metric("ebm_weight[k]", "mass of mode k's region under the EBM: grid integration in 2-D, else the weight the "
           "energy states, else its sample share", ("model_weights",), _identity, trace=True,
           headline={"ebm_weight[0]": "w0"}, density=True),
    Metric("ebm_weight_mse", "mean over modes of (EBM weight - true weight)^2 (000 Table 3, col. 4)",
           ("model_weights", "true_weights"), weight_mse, trace=True, better=LOWER, gate=_MSE, headline="weight_mse",
           density=True),
    Metric("ebm_weight_relerr[k]", "(EBM weight - true weight) / true weight", ("model_weights", "true_weights"),
           weight_relative_error, density=True),
    Metric("kl", "KL(p* || p_theta), Monte Carlo over the held-out samples, the model normalised exactly or on the "
           "grid", ("test_logp_true", "test_logp_model"), lambda t, m: float((t - m).mean()), trace=True,
           better=LOWER, gate=_ERR, headline="kl", density=True),
    Metric("kl_estimate", "Jarzynski's own estimate of the KL (003 eq. 12): log Z~ + E*[U] - H(p*)",
           ("log_z_estimate", "test_energy", "test_logp_true"), lambda est, u, t: float(est + u.mean() + t.mean()),
           trace=True, headline="kl_est"),
    Metric("log_z_error", "the algorithm's log Z estimate minus the model's log Z", ("log_z_estimate", "model_log_z"),
           lambda est, log_z: float(est - log_z), trace=True, headline="logz_err", density=True),
    Metric("param_error[name]", "|theta_name - theta*_name| for a teacher-student target (003)",
           ("teacher_params", "model_params"), _param_errors, trace=True, better=LOWER, gate=Gate(floor=1e-2),
           headline={"param_error[a]": "err[a]", "param_error[b]": "err[b]"}),
    Metric("n_resamples", "resampling events of the walkers (003 Alg. 2)", ("algorithm_metrics",),
           reported("n_resamples"), headline="resamples", reported_by="algorithm"),
    Metric("ess", "effective sample size of the walkers' weights over their number (003 eq. 13)",
           ("algorithm_metrics",), reported("ess"), headline="ess", reported_by="algorithm"),
    Metric("logp_median_sq_error", "median over held-out x ~ p* of (log p_theta - log p*)^2, both normalised "
           "on the evaluation grid: one reading of 000 Table 1, where the data are",
           ("test_logp_model", "test_logp_true_grid"), median_sq_log_density_error,
           better=LOWER, gate=_ERR, headline="logp_mse", density=True),
    Metric("logp_median_sq_error_grid", "median over the nodes of the uniform evaluation grid of the box of (log "
           "p_theta - log p*)^2, both normalised on the grid: the other reading of 000 Table 1 (the one whose "
           "magnitudes match 000's), dominated by the tails where both densities are small",
           ("grid_logp_model", "grid_logp_true"),
           median_sq_log_density_error, better=LOWER, gate=_ERR, density=True),
    Metric("test_loglik", "mean log-density of the EBM (grid-normalised or exact log Z) on the held-out samples",
           ("test_logp_model",), lambda lp: float(lp.mean()), trace=True, better=HIGHER,
           gate=Gate(scale="linear", min_tol=0.02, cap=0.5), headline="test_ll", density=True),
    Metric("energy_spread", "max U - min U over the held-out samples (nats): the scale of the learned energy free "
           "of its additive constant; above bench.runner.RUNAWAY_SPREAD the run is recorded as runaway",
           ("test_energy",), energy_spread, trace=True),
    Metric("flow_test_loglik", "held-out log-likelihood of the algorithm's flow (the ODE flow of the dynamics, "
           "002 eq. 6; the companion flow of flowMC-EBM, NT-EBM, NCE-EBM, CoopFlow)", ("algorithm_metrics",),
           reported("flow_test_loglik"), headline="flow_test_ll", reported_by="algorithm"),
    Metric("flow_kl", "KL(p* || ODE flow) on the held-out samples (002)", ("algorithm_metrics",),
           reported("flow_kl"), headline="flow_kl", reported_by="algorithm"),
    Metric("train_nfe_per_iter", "function evaluations of the noise-free dynamics per training iteration (002)",
           ("algorithm_metrics",), reported("train_nfe_per_iter"), headline="nfe/iter", reported_by="algorithm"),
    # ---- models that are not densities on the box (bench/evaluation.py, module docstring)
    Metric("mass_outside_box", "fraction of the model's mass on a 3x wider box (same centre) outside the "
           "evaluation box", ("outer_grid",), lambda outer: mass_outside(*outer), trace=True, better=LOWER,
           # gated above LEAK_TOL only: a leak below it leaves the model proper (crossing it is the gate's
           # "model became improper"); with a floor of 1e-3 one seed of 8 at 1.6e-3 alarmed in half the splits
           gate=Gate(floor=LEAK_TOL)),
    Metric("border_density_ratio", "max model density on the evaluation box's border / max on the box",
           ("grid_log_density",), border_density_ratio, trace=True),
    Metric("improper", f"1 if mass_outside_box > {LEAK_TOL} (metrics.catalogue.LEAK_TOL): the grid metrics are "
           "those of the model's restriction to the box", ("outer_grid",),
           lambda outer: float(not mass_outside(*outer) <= LEAK_TOL), trace=True),
    # ---- sample quality of generated images (first in the samples stage: as before the declarations)
    Metric("fid_<extractor>", "FID of the negatives against held-out images, features of the named extractor "
           "(classifier: the suite's own; inception: Inception-v3, the papers'); along training the classifier's",
           ("quality",), lambda q: q["fid"], trace=True),
    Metric("is_<extractor>_mean", "Inception Score of the negatives with the named extractor's logits",
           ("quality",), lambda q: q["is_mean"]),
    Metric("is_<extractor>_std", "standard deviation of that Inception Score over its splits", ("quality",),
           lambda q: q["is_std"]),
    Metric("out_of_range_frac", "share of the generated pixel values outside [-1, 1] (clamped before FID / IS)",
           ("quality",), lambda q: q["out_of_range_frac"], trace=True),
    Metric("fid_n_generated", "generated images behind the FID / IS", ("quality",), lambda q: q["n_generated"]),
    Metric("fid_n_reference", "held-out reference images behind the FID / IS", ("quality",),
           lambda q: q["n_reference"]),
    # ---- energies of generated against held-out images (000 Fig. 7, after Dai et al. 2019)
    Metric("energy_overlap", "overlap of the energy histograms of generated and held-out images (1: they coincide)",
           ("image_energies",), _energy_statistic("energy_overlap")),
    Metric("energy_w1", "1-Wasserstein distance between the energies of generated and held-out images",
           ("image_energies",), _energy_statistic("energy_w1")),
    Metric("energy_mean_gap", "(mean energy of generated images - that of held-out images) / std of the latter",
           ("image_energies",), _energy_statistic("energy_mean_gap")),
    Metric("energy_std_ratio", "std of the generated images' energies / that of the held-out images' (< 1: less "
           "diverse in energy)", ("image_energies",), _energy_statistic("energy_std_ratio")),
    # ---- the negatives and the chain starts (000 Table 3)
    Metric("neg_weight[k]", "fraction of the negative samples in mode k's region (along training Jarzynski's "
           "walkers count with their weights)", ("negative_mode_weights",), _identity, trace=True),
    Metric("neg_weight_mse", "negative samples' mode weights vs the true weights", ("negative_mode_weights",
           "true_weights"), weight_mse, better=LOWER, gate=_MSE),
    Metric("neg_weight_mse_vs_ebm", "negative samples' weights vs the EBM's (000 Table 3, col. 3)",
           ("negative_mode_weights", "model_weights"), weight_mse, density=True),
    Metric("init_weight_mse_vs_ebm", "chain initialisations' weights vs the EBM's (000 Table 3, col. 2)",
           ("init_mode_weights", "model_weights"), weight_mse, density=True),
    # ---- image targets: class weights read by the suite's classifier (003 §4.2, Fig. 3)
    Metric("label_weight[k]", "image targets: weight of class k among generated images read by the suite's "
           "classifier (Jarzynski: walker weights summed per label, 003 §4.2)", ("label_weights",), _identity,
           trace=True),
    Metric("label_weight_relerr[k]", "|label weight - true weight| / true weight (003 Fig. 3)",
           ("label_weights", "true_weights"), relative_weight_error, trace=True),
    Metric("label_weight_relerr_mean", "the mean over classes of label_weight_relerr[k]",
           ("label_weights", "true_weights"), lambda w, t: float(relative_weight_error(w, t).mean()), trace=True),
    Metric("off_class_share", "share of generated images the classifier puts outside the target's classes",
           ("off_class_share",), _identity, trace=True),
    Metric("classifier_accuracy", "the classifier's held-out accuracy", ("classifier_accuracy",), _identity,
           trace=True),
    # ---- what algorithms report of themselves (extra_metrics)
    Metric("flow_pretrain_loglik", "the companion flow's log-likelihood at the end of its pre-training",
           ("algorithm_metrics",), reported("flow_pretrain_loglik"), reported_by="algorithm"),
    Metric("flow_pretrain_reverse_kl", "the companion flow's reverse KL to p* at the end of its pre-training",
           ("algorithm_metrics",), reported("flow_pretrain_reverse_kl"), reported_by="algorithm"),
    Metric("local_accept", "acceptance rate of the algorithm's local (MALA / HMC) steps", ("algorithm_metrics",),
           reported("local_accept"), reported_by="algorithm"),
    Metric("global_accept", "acceptance rate of flowMC's i-SIR steps (000 Alg. 6)", ("algorithm_metrics",),
           reported("global_accept"), reported_by="algorithm"),
    Metric("step_size", "the local sampler's step size at the end of training (adapted)", ("algorithm_metrics",),
           reported("step_size"), reported_by="algorithm"),
    Metric("log_z_change", "Jarzynski's estimate of log Z_theta - log Z_theta0 (003 eq. 12)", ("algorithm_metrics",),
           reported("log_z_change"), reported_by="algorithm"),
    Metric("nce_bias", "NCE-EBM's learned log-normaliser offset (001)", ("algorithm_metrics",), reported("nce_bias"),
           reported_by="algorithm"),
    Metric("flow_eval_nfe", "function evaluations of the ODE flow's test log-likelihood (002)",
           ("algorithm_metrics",), reported("flow_eval_nfe"), reported_by="algorithm"),
    Metric("flow_grid_mass", "the ODE flow's mass on the target's box (about 1 when the box holds it)",
           ("algorithm_metrics",), reported("flow_grid_mass"), reported_by="algorithm"),
    Metric("flow_eval_failed", "1 when the ODE solver failed on the flow's test log-likelihood",
           ("algorithm_metrics",), reported("flow_eval_failed"), reported_by="algorithm"),
    # ---- mixing of the evaluation chains (000 Table 2, Fig. 6; 001)
    Metric("max_rhat", "max over dims of rank-normalised split R-hat (arviz), chains from the final state, "
           "adaptation frozen, burn_in draws dropped", ("chains",), _max(rhat), trace=True, better=LOWER,
           gate=Gate(lower=1.0, floor=0.01), headline="max_rhat"),
    Metric("max_rhat_deterministic", "the same R-hat for noise-free evaluation chains (CoopFlow, 002): collapse to "
           "fixed points, not mixing", ("deterministic_chains",), _deterministic_rhat, trace=True,
           headline="rhat_det"),
    Metric("max_rhat_classic", "max over dims of classic Gelman-Rubin R-hat (001)", ("chains",), _max(classic_rhat),
           trace=True),
    Metric("chain_mode_stay", "mean over the evaluation chains of the largest share of a chain's draws in one "
           "mode's region: 1 when chains stay in their modes (trapped), near the largest weight when they hop; reads "
           "a large max_rhat as trapping or as slow hopping", ("chain_modes",), chain_mode_stay, trace=True),
    Metric("min_ess_bulk", "min over dims of arviz bulk ESS of the evaluation chains", ("chains",), _min(ess_bulk),
           trace=True, better=HIGHER, gate=Gate(floor=1.0), headline="ess_bulk"),
    Metric("min_ess_tail", "min over dims of arviz tail ESS of the evaluation chains", ("chains",), _min(ess_tail),
           trace=True, better=HIGHER, gate=Gate(floor=1.0)),
    # ---- the independent audit of the EBM's mode weights (bench/audit.py)
    Metric("audit_weight[k]", "the EBM's weight of mode k by the audit (flowMC with a mixture proposal)",
           ("audit",), _weights_or_none),
    Metric("audit_weight_mse", "the audited EBM weights vs the true weights: is the EBM wrong?",
           ("audit", "true_weights"), lambda a, t: None if a.weights is None else weight_mse(a.weights, t)),
    Metric("audit_max_rhat", "max over dims of split R-hat of the audit's chains: did the audit mix?", ("audit",),
           lambda a: a.max_rhat),
    Metric("audit_global_accept", "acceptance rate of the audit's i-SIR steps", ("audit",),
           lambda a: a.global_accept),
    Metric("audit_local_accept", "acceptance rate of the audit's MALA steps", ("audit",), lambda a: a.local_accept),
    Metric("neg_weight_mse_vs_audit", "the negatives' weights vs the audited EBM's: can the training sampler see "
           "the EBM?", ("negative_mode_weights", "audit"),
           lambda w, a: None if a.weights is None else weight_mse(w, a.weights)),
    # ---- what the runner reports of a run that did not finish
    Metric("diverged_at", "iteration at which a diverged run stopped", reported_by="runner"),
    Metric("runaway_at", "iteration of the first trace point (or the end of training) at which energy_spread "
           "exceeded bench.runner.RUNAWAY_SPREAD: the run's status is runaway", reported_by="runner"),
    Metric("timeout_at", "iteration at which a timed-out run stopped", reported_by="runner"),
]

#: name -> Metric of every registered metric, built-in or plug-in: filled by bench.registry.register only
METRICS: dict[str, Metric] = {}


def declaration(name: str) -> Metric | None:
    """The registered metric that declares ``name``: by its name, else the first whose pattern it is an instance
    of; None for a name no declaration covers (an older result, an algorithm's own undeclared number)."""
    name = str(name)
    if name in METRICS:
        return METRICS[name]
    return next((m for m in METRICS.values() if m.pattern is not None and m.pattern.fullmatch(name)), None)


def headline_labels() -> dict[str, str]:
    """Metric name -> column label of the headline table, in the order of registration."""
    return {inst: label for m in METRICS.values() for inst, label in m.headlines().items()}

__all__ = ["BUILT_IN", "LEAK_TOL", "METRICS", "QUANTITIES", "STAGES", "Gate", "Metric", "declaration",
           "headline_labels", "reported"]
