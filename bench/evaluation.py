"""Evaluation: turn a trained model into numbers.

The metrics are declared units (metrics/catalogue.py): each names the quantities it is computed from and has a
pure compute function. This module measures those quantities of a model on a target (``Quantities``), each once
per evaluation, when the first metric that needs it is computed, and only where the target's capabilities
(``Target.has``) and the algorithm allow; and it runs the registered metrics stage by stage (``measure``): the
model (its density, weights and parameters), its samples (negatives, chain starts, class labels, sample
quality), what the algorithm reports of itself, fresh evaluation chains, and the independent audit of the
weights. ``trace_point`` is what is logged during training (the metrics declared ``trace``), ``evaluate`` what
is measured after it.

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
``min_ess_tail`` / ``chain_mode_stay`` (on targets with modes, not images: whether the chains stay in one mode).
"""

from __future__ import annotations

import numpy as np
import torch

from algorithms.base import Diverged
from algorithms.energies import has_exact_log_z, samples_exactly, states_mode_weights
from metrics import catalogue
from metrics.catalogue import LEAK_TOL, STAGES
from metrics.classifier import label_weights
from metrics.density import enlarged_box, grid, grid_log_normalizer, inside_box
from metrics.modes import grid_mode_weights, sample_mode_weights

#: the enlarged box is this many times as wide per axis as the evaluation box (same centre)
LEAK_FACTOR = 3
#: its cells are this many times as wide as the evaluation grid's (at least LEAK_MIN_CELLS per box width)
LEAK_COARSENING = 4
LEAK_MIN_CELLS = 8
#: quantities that draw random numbers: a metric measures them after its other needs, and only when those are
#: available, so that a metric that cannot be computed draws nothing (the random stream is part of a result)
DRAWS = {"sample_share", "negatives", "negative_mode_weights", "init_mode_weights", "label_weights",
         "off_class_share", "quality", "energy_histograms", "chains", "deterministic_chains", "chain_modes",
         "audit"}


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
    """What does not change while a cell trains: the target, the energy (whose parameters do), the settings, the
    target's fixed held-out set and its log-density there, and p*'s log normaliser on each evaluation grid."""

    def __init__(self, target, energy, cfg, device, inception_weights: str | None = None):
        self.target, self.energy, self.cfg, self.device = target, energy, cfg, device
        #: the Inception weights file for Inception FID / IS (None: EBM_BENCH_INCEPTION_WEIGHTS, if set)
        self.inception_weights = inception_weights
        self.test = target.test_set(cfg.n_eval_samples)
        self.log_true = target.log_prob(self.test.double()) if target.has("density") else None
        #: metric -> the protocol of its FID / KID / IS value (``QualityProtocol.as_dict()``), for the result rows
        self.protocols: dict[str, dict] = {}
        self._extractor = self._quality_trace = None
        self.exact_log_z = has_exact_log_z(energy)
        self.on_grid = target.dim == 2
        self._true_log_z: dict[int, tuple[float, torch.Tensor]] = {}

    def classifier_extractor(self):
        """The target's classifier as a feature extractor (metrics/sample_quality.py), built once per run."""
        if self._extractor is None:
            from metrics.sample_quality import ClassifierExtractor

            self._extractor = ClassifierExtractor.from_classifier(self.target.classifier())
        return self._extractor

    def quality_trace(self):
        """FID over training (``QualityTrace``): the classifier features of ``reference_images`` computed once."""
        if self._quality_trace is None:
            from metrics.sample_quality import QualityTrace

            ref, split = self.target.reference_images()
            self._quality_trace = QualityTrace(ref, extractor=self.classifier_extractor(), reference_split=split,
                                               metrics=("fid",), shape=self.target.shape,
                                               device=_quality_device(self.device))
        return self._quality_trace

    def true_grid_log_z(self, n_grid: int, grid_pts) -> float:
        """log Z of p* on the evaluation grid (000 Table 1 normalises both densities on the same grid); it
        depends on the grid alone, so it is computed once per resolution."""
        return self._true_on_grid(n_grid, grid_pts)[0]

    def true_grid_log_density(self, n_grid: int, grid_pts) -> torch.Tensor:
        """log p* at the evaluation grid's nodes, normalised on the grid (float64, n_grid^2 values)."""
        log_z, log_p = self._true_on_grid(n_grid, grid_pts)
        return log_p - log_z

    def _true_on_grid(self, n_grid: int, grid_pts) -> tuple[float, torch.Tensor]:
        if n_grid not in self._true_log_z:
            pts, area, _ = grid_pts
            log_p = self.target.log_prob(pts.double()).double()
            self._true_log_z[n_grid] = (grid_log_normalizer(log_p, area), log_p)
        return self._true_log_z[n_grid]

    def model_log_z(self, n_grid: int):
        """log Z of the model and, on a grid, (points, cell area, log-density) for plots and mode weights."""
        q = Quantities(self, None, n_grid)
        return q["model_log_z"], q["grid"]

    def measure(self, alg, n_grid: int) -> tuple[dict[str, float], object]:
        """The model's metrics after training at resolution ``n_grid`` (the model stage), and its grid."""
        q = Quantities(self, alg, n_grid)
        return measure(q, "model"), q["grid"]


class Quantities:
    """The quantities of one evaluation (metrics.catalogue.QUANTITIES) of ``alg``'s model on ``probe``'s target,
    with the evaluation grid of ``n_grid`` x ``n_grid`` nodes: ``q[name]`` measures one the first time it is
    asked for and keeps it; None where the target, the energy or the algorithm does not have what it takes.
    ``final``: after training (else at a trace point); ``chains``: whether evaluation chains are run (after
    training: when there are at least 2 chains of 4 draws; at trace points: every ``rhat_every``-th). ``given``:
    quantities already known (tests, and metrics of given samples)."""

    def __init__(self, probe, alg, n_grid: int = 0, final: bool = True, chains: bool | None = None,
                 given: dict | None = None):
        self.probe, self.alg, self.n_grid, self.final = probe, alg, n_grid, final
        cfg = getattr(probe, "cfg", None)
        self.run_chains = chains if chains is not None else bool(cfg and cfg.n_chains > 1 and cfg.n_draws >= 4)
        self._known = dict(given or {})

    def __getitem__(self, name: str):
        if name not in self._known:
            if name not in catalogue.QUANTITIES and name != "grid":
                raise KeyError(f"unknown quantity {name!r}; valid: {', '.join(catalogue.QUANTITIES)}")
            self._known[name] = getattr(self, f"_{name}")() if self.probe is not None else None
        return self._known[name]

    @property
    def target(self):
        return self.probe.target

    @property
    def energy(self):
        return self.probe.energy

    # ---- the model
    def _grid(self):
        """(points, cell area, log-density) of the model on the evaluation grid: 2-D targets, models without an
        exact log Z."""
        if self.probe.exact_log_z or not self.probe.on_grid:
            return None
        pts, area, logu = _ebm_grid(self.energy, self.target.box, self.n_grid, self.probe.device)
        if not torch.isfinite(logu).all():
            raise Diverged(-1, "non-finite energy on the evaluation grid")
        return pts, area, logu

    def _grid_log_density(self):
        g = self["grid"]
        return None if g is None else g[2].reshape(self.n_grid, self.n_grid)

    def _outer_grid(self):
        """The model on the enlarged box: LEAK_FACTOR * m cells per axis, m = max(n_grid // LEAK_COARSENING,
        LEAK_MIN_CELLS), so the evaluation box is exactly its middle m x m cells."""
        if self["grid"] is None:
            return None
        box = self.target.box
        m = max(self.n_grid // LEAK_COARSENING, LEAK_MIN_CELLS)
        pts, _, logu = _ebm_grid(self.energy, enlarged_box(box, LEAK_FACTOR), LEAK_FACTOR * m, self.probe.device)
        return logu, inside_box(pts, box)

    def _model_log_z(self):
        if self.probe.exact_log_z:
            with torch.no_grad():
                return float(self.energy.log_z())
        g = self["grid"]
        return None if g is None else grid_log_normalizer(g[2], g[1])

    def _true_weights(self):
        return self.target.mode_weights.numpy() if self.target.has("modes") else None

    def _sample_share(self):
        """Share of ``n_model_samples`` exact model samples in each mode's region (nearest teacher mode); where
        the model is a mixture of unit-covariance Gaussians and the target gives its regions' masses for one
        (the 003 student on the two-mode teacher), the exact mass instead, the share's limit (no sampling)."""
        t, e = self.target, self.energy
        if not (t.has("modes") and samples_exactly(e)):
            return None
        if hasattr(e, "unit_components") and t.has("region_masses"):
            return t.region_masses(*e.unit_components()).numpy()
        x = e.sample_exact(self.probe.cfg.n_model_samples).cpu()
        return sample_mode_weights(t.assign(x), t.n_modes)

    def _model_weights(self):
        """The mass of each mode's region on the grid, else the weights a parametric energy states (the 003
        student's sigma(z)), else the share of exact samples."""
        t = self.target
        if not t.has("modes"):
            return None
        g = self["grid"]
        if g is not None:
            return grid_mode_weights(g[2], t.assign(g[0]), t.n_modes)
        if states_mode_weights(self.energy):
            w = self.energy.mode_weights().double().cpu().numpy()
            if w.shape == (t.n_modes,):
                return w
        return self["sample_share"]

    def _test_energy(self):
        return _energy_on(self.energy, self.probe.test, self.probe.device)

    def _test_logp_model(self):
        log_z = self["model_log_z"]
        return None if log_z is None else -self["test_energy"] - log_z

    def _test_logp_true(self):
        return self.probe.log_true

    def _test_logp_true_grid(self):
        if self.probe.log_true is None or self["model_log_z"] is None:
            return None
        g = self["grid"]
        return self.probe.log_true - (0.0 if g is None else self.probe.true_grid_log_z(self.n_grid, g))

    def _grid_logp_model(self):
        g = self["grid"]
        return None if g is None else g[2].double() - self["model_log_z"]

    def _grid_logp_true(self):
        g = self["grid"]
        if g is None or not self.target.has("density"):
            return None
        return self.probe.true_grid_log_density(self.n_grid, g)

    def _log_z_estimate(self):
        return self.alg.log_z_estimate()

    def _teacher_params(self):
        return self.target.teacher_params() if self.target.has("teacher") else None

    def _model_params(self):
        return {n: p.detach().double().cpu() for n, p in self.energy.named_parameters()}

    # ---- samples
    def _negatives(self):
        if self.final:
            return self.alg.draw_negatives(self.probe.cfg.n_negatives).cpu()
        return self.alg.negatives()

    def _negative_mode_weights(self):
        t, neg = self.target, self["negatives"]
        if not t.has("modes") or neg is None:
            return None
        if self.final:
            return sample_mode_weights(t.assign(neg), t.n_modes)
        return sample_mode_weights(t.assign(neg.cpu()), t.n_modes, self.alg.negative_weights())

    def _init_mode_weights(self):
        t = self.target
        if not (self.final and t.has("modes")):
            return None
        return sample_mode_weights(t.assign(self.alg.chain_starts(self.probe.cfg.n_negatives).cpu()), t.n_modes)

    def _generated(self):
        """Image targets: ``n_negatives`` images drawn as the algorithm draws its negatives (Jarzynski: its walkers
        resampled by their weights), unweighted: after training the ``negatives``, along training a fresh draw.
        The images the FID and the unweighted class weights of one evaluation read; a non-finite pixel is a
        diverged run (``finite_images``)."""
        if "_generated" not in self._known:
            x = self["negatives"] if self.final else self.alg.draw_negatives(self.probe.cfg.n_negatives)
            self._known["_generated"] = finite_images(x.detach().cpu())
        return self._known["_generated"]

    def _label_samples(self):
        """Generated images for the class weights (003 §4.2, Fig. 3) and their weights: weighted walkers
        (Jarzynski) count with their normalised weights, as 003 reads them; other algorithms give the
        ``n_negatives`` images drawn as they draw negatives (``_generated``)."""
        if "_label" not in self._known:
            w = self.alg.negative_weights()
            x = self.alg.negatives() if w is not None else self._generated()
            self._known["_label"] = (x.detach().cpu().float(), None if w is None else w.detach().cpu().double())
        return self._known["_label"]

    def _label_weights(self):
        t = self.target
        if not t.has("classifier"):
            return None
        x, w = self._label_samples()
        return label_weights(t.assign(x).numpy(), t.n_modes, None if w is None else w.numpy())

    def _off_class_share(self):
        if not self.target.has("classifier"):
            return None
        x, w = self._label_samples()
        off = self.target.off_class(x).numpy()
        return float(off.mean() if w is None else w.numpy()[off].sum())

    def _classifier_accuracy(self):
        return self.target.classifier().accuracy if self.target.has("classifier") else None

    def _quality(self):
        """After training: FID / IS of the generated images (``sample_quality``); along training: the classifier FID
        of the images drawn at the trace point (FID over training, ``Probe.quality_trace``)."""
        t = self.target
        if not (t.has("classifier") and t.has("sample_quality")):
            return None
        x = self._generated()  # drawn before the classifier is first built (its weights' initialisation draws)
        if self.final:
            return sample_quality(self.probe, x)
        trace = self.probe.quality_trace()
        q = trace(x)
        s = trace.extractor.suffix
        return {"fid": {s: q[f"fid_{s}"]}, "out_of_range_frac": q["out_of_range_frac"]}

    def _image_energies(self):
        """Energies of the generated images and of the held-out images (000 Fig. 7), after training."""
        if not (self.final and self.target.has("sample_quality")):
            return None
        e_neg = _energy_on(self.energy, self._generated(), self.probe.device)
        e_data = _energy_on(self.energy, self.probe.test, self.probe.device)
        if not (torch.isfinite(e_neg).all() and torch.isfinite(e_data).all()):
            raise Diverged(-1, "non-finite energies of the generated or held-out images")
        return e_neg, e_data

    # ---- the algorithm, chains, audit
    def _algorithm_metrics(self):
        if not self.final:
            return None
        test = self.probe.test.to(device=self.probe.device, dtype=dtype_of(self.energy))
        return self.alg.extra_metrics(test)

    def _evaluation_chains(self):
        if "_chains" not in self._known:
            chains = None
            if self.run_chains:
                cfg = self.probe.cfg
                chains = evaluation_chains(self.alg, cfg.n_chains, cfg.n_draws, cfg.burn_in)
                if not np.isfinite(chains).all():
                    raise Diverged(-1, "non-finite states in the evaluation chains")
            self._known["_chains"] = chains
        return self._known["_chains"]

    def _chains(self):
        return self._evaluation_chains() if self.alg.stochastic_chains else None

    def _deterministic_chains(self):
        return None if self.alg.stochastic_chains else self._evaluation_chains()

    def _chain_modes(self):
        """Region labels of the stochastic evaluation chains' draws (``Target.assign``); not for image targets,
        whose regions are read by a classifier (n_chains x n_draws images)."""
        t, chains = self.target, self["chains"]
        if chains is None or not t.has("modes") or t.has("image"):
            return None
        x = torch.from_numpy(chains.reshape(-1, chains.shape[-1]))
        return t.assign(x).reshape(chains.shape[:2]).cpu().numpy()

    def _audit(self):
        from bench.audit import audit_weights

        cfg, t = self.probe.cfg, self.target
        if not (self.final and cfg.audit_chains and t.has("mixture")):
            return None
        self.energy.eval()
        return audit_weights(self.energy, t, cfg.audit_chains, cfg.audit_draws, cfg.audit_burn_in)


def registered_metrics() -> list:
    """The registered metrics (metrics.catalogue.METRICS: the built-ins and plug-ins), in registration order."""
    return list(catalogue.METRICS.values())


def measure(q: Quantities, stage: str) -> dict[str, float]:
    """The registered metrics of ``stage`` (metrics.catalogue.STAGES) on the quantities ``q``: after training
    every one, along training those declared ``trace``. A metric whose needs are not all available is skipped;
    its needs that draw random numbers (DRAWS) are measured last, once the others are known to be there."""
    out: dict[str, float] = {}
    for m in registered_metrics():
        if m.compute is None or m.stage != stage or not (q.final or m.trace):
            continue
        order = sorted(m.needs, key=lambda n: n in DRAWS)
        if any(q[n] is None for n in order):
            continue
        out.update(m.values(*(q[n] for n in m.needs)))
    return out


def trace_point(probe: Probe, alg) -> dict[str, float]:
    """The metrics declared ``trace`` of the model and its current negatives, on the coarser trace grid."""
    q = Quantities(probe, alg, probe.cfg.trace_grid, final=False, chains=False)
    return {**measure(q, "model"), **measure(q, "samples")}


def rhat_point(probe: Probe, alg, it: int, last: bool) -> dict[str, float]:
    """Mixing of the algorithm's own sampler during training (000 Fig. 6: R-hat along training): the
    diagnostics of ``evaluate``'s evaluation chains (``evaluation_chains``: n_chains chains from
    ``chain_starts``, burn_in + n_draws steps, adaptation frozen) at every ``rhat_every``-th trace point and at
    the last one; empty elsewhere (it costs n_chains x (burn_in + n_draws) sampler steps)."""
    cfg = probe.cfg
    k = cfg.rhat_every
    if not k or cfg.n_chains < 2 or cfg.n_draws < 4 or not (last or (it // cfg.eval_every) % k == 0):
        return {}
    return measure(Quantities(probe, alg, final=False, chains=True), "chains")


def finite_images(x):
    """``x``, or ``Diverged`` when a generated image has a non-finite pixel (a run's outcome, not an error)."""
    if not torch.isfinite(x).all():
        raise Diverged(-1, "non-finite pixels in the generated images")
    return x


def _quality_device(device) -> str:
    return "cuda" if getattr(device, "type", str(device)).startswith("cuda") else "cpu"


def sample_quality(probe: Probe, negs) -> dict:
    """Sample quality of generated images (sample_quality targets): FID and IS with the suite's classifier as
    feature extractor (``fid_classifier``, ``is_classifier_mean``: on any data, CPU), and Inception FID / IS
    (``fid_inception``, the papers' metric) when a local Inception weights file is given (``probe.inception_weights``,
    else EBM_BENCH_INCEPTION_WEIGHTS). The reference is the target's ``reference_images``: its held-out images, each
    once, raw pixels. The generated images are ``negs``, the ``n_negatives`` drawn after training as the algorithm
    draws negatives (Jarzynski: its walkers resampled by their weights), in [-1, 1]. Each value's protocol
    (extractor, counts, split, pixel quantisation: metrics/sample_quality.py's QualityProtocol) is kept in
    ``probe.protocols`` and stored with its result row. Returns the ``quality`` quantity
    (metrics.catalogue.QUANTITIES)."""
    import os

    from metrics.sample_quality import ENV_INCEPTION_WEIGHTS, InceptionExtractor
    from metrics.sample_quality import sample_quality as measure_quality

    target = probe.target
    ref, split = target.reference_images()
    extractors = [probe.classifier_extractor()]
    weights = getattr(probe, "inception_weights", None) or os.environ.get(ENV_INCEPTION_WEIGHTS)
    if weights:
        extractors.append(InceptionExtractor(weights))
    out = {"fid": {}, "is_mean": {}, "is_std": {}, "n_generated": float(len(negs)), "n_reference": float(len(ref))}
    for ext in extractors:
        # IS: torch-fidelity's 10 splits, or one per image when fewer were generated (smoke runs; recorded)
        q = measure_quality(negs.float(), ref, extractor=ext, reference_split=split, metrics=("fid", "is"),
                            value_range=(-1.0, 1.0), shape=target.shape, isc_splits=min(10, len(negs)),
                            device=_quality_device(probe.device))
        s = ext.suffix
        out["fid"][s] = q.metrics[f"fid_{s}"]
        out["is_mean"][s], out["is_std"][s] = q.metrics[f"is_{s}_mean"], q.metrics[f"is_{s}_std"]
        out["out_of_range_frac"] = q.metrics["out_of_range_frac"]
        probe.protocols.update(dict.fromkeys(q.metrics, q.protocol.as_dict()))
        probe.protocols.setdefault("fid_n_generated", q.protocol.as_dict())  # the counts of the first protocol
        probe.protocols.setdefault("fid_n_reference", q.protocol.as_dict())
    return out


def evaluate(probe: Probe, alg) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every registered metric the target's ground truth allows, stage by stage, and arrays for the plots."""
    target, cfg = probe.target, probe.cfg
    art: dict[str, np.ndarray] = {}
    probe.energy.eval()
    q = Quantities(probe, alg, cfg.eval_grid)
    m = measure(q, "model")
    art["negatives"] = q["negatives"][:2000].float().numpy()  # drawn here, whatever the metrics: part of the stream
    m.update(measure(q, "samples"))
    if q["grid"] is not None:
        pts, area, logu = q["grid"]
        log_z = grid_log_normalizer(logu, area)
        art["grid_log_density"] = (logu - log_z).float().reshape(cfg.eval_grid, cfg.eval_grid).numpy()
        art["box"] = np.asarray(target.box, dtype=float)
    m.update(measure(q, "algorithm"))
    # an algorithm's own metrics that no declaration names go into the results as they are
    m.update({k: v for k, v in (q["algorithm_metrics"] or {}).items() if k not in m and not declared(k)})
    if q._known.get("image_energies") is not None:  # 000 Fig. 7's histograms (bench/plots_images.py)
        e_neg, e_data = q["image_energies"]
        art.update(energy_negatives=e_neg.float().numpy(), energy_data=e_data.float().numpy())
    art.update(alg.extra_artifacts(target.box, cfg.eval_grid))
    m.update(measure(q, "chains"))
    m.update(measure(q, "audit"))
    return m, art


def declared(name: str) -> bool:
    """Whether a registered metric declares ``name`` (by name or as an instance of its pattern)."""
    return catalogue.declaration(name) is not None


def evaluation_chains(alg, n_chains: int, n_draws: int, burn_in: int) -> np.ndarray:
    """(chain, draw, dim) draws of the algorithm's own sampler from its chain starts (000 Table 2: 128 chains
    from the persistent state, or from the flow for CoopFlow): ``burn_in + n_draws`` steps, adaptation frozen
    (``TrainingAlgorithm.run_chains``), the first ``burn_in`` dropped."""
    chains = alg.run_chains(alg.chain_starts(n_chains), burn_in + n_draws)
    if chains.shape[1] != burn_in + n_draws:
        raise ValueError(f"{alg.name}.run_chains returned {chains.shape[1]} draws, asked for {burn_in + n_draws}")
    return chains[:, burn_in:].cpu().double().numpy()


def of_given(stage: str, **given) -> dict[str, float]:
    """The registered metrics of ``stage`` computed from given quantities alone (e.g. ``chains=...``, or an
    image target's ``label_weights``): what they say of known inputs."""
    return measure(Quantities(None, None, given=given), stage)


def mixing(chains: np.ndarray, stochastic: bool) -> dict[str, float]:
    """R-hat and ESS of evaluation chains (000 Table 2, 001 Fig. 2; metrics/mixing.py): the chains-stage metrics.

    Deterministic chains (noise-free dynamics) give only ``max_rhat_deterministic``, the largest split R-hat
    over dimensions: it measures how the chains collapse to fixed points (inf when they stop at different
    points, NaN when all stop at one), not mixing; it is not comparable with ``max_rhat``."""
    return of_given("chains", **({"chains": chains} if stochastic else {"deterministic_chains": chains}))


def label_metrics(target, x, weights=None) -> dict[str, float]:
    """The class-weight metrics of images ``x`` (with normalised ``weights``, or uniform) read by an image target's
    classifier (003 §4.2, Fig. 3): the samples-stage metrics of ``label_weights``, ``off_class_share``,
    ``classifier_accuracy`` and the target's ``true_weights``."""
    x = x.detach().cpu().float()
    w = None if weights is None else weights.detach().cpu().double()
    off = target.off_class(x).numpy()
    given = {"label_weights": label_weights(target.assign(x).numpy(), target.n_modes, None if w is None else w.numpy()),
             "off_class_share": float(off.mean() if w is None else w.numpy()[off].sum()),
             "classifier_accuracy": target.classifier().accuracy, "true_weights": target.mode_weights.numpy()}
    return of_given("samples", **given)


__all__ = ["LEAK_TOL", "STAGES", "Probe", "Quantities", "evaluate", "evaluation_chains", "label_metrics", "measure",
           "mixing", "of_given", "rhat_point", "trace_point"]
