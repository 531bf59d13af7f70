"""Run one cell (train an EBM with one algorithm on one target and seed) and evaluate it.

The training loop is the same for every algorithm: draw a batch of positives from the fixed training
set, call ``algorithm.step``. Trace points (mode weights over training) are taken every ``eval_every``
iterations. Evaluation after training computes every metric the target's ground truth allows.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import torch
from tqdm.auto import tqdm

import algorithms
import datasets
from algorithms.base import Diverged, Problem
from algorithms.energies import make_energy
from algorithms.work import Work
from bench.store import code_version, config_json
from bench.suite import Cell
from metrics.density import grid, grid_log_normalizer, median_sq_log_density_error
from metrics.mixing import classic_rhat, ess_bulk, ess_tail, rhat
from metrics.modes import grid_mode_weights, sample_mode_weights, weight_mse, weight_relative_error


def dtype_of(energy) -> torch.dtype:
    return next(energy.parameters()).dtype


def _ebm_grid(energy, box, n, device):
    pts, area = grid(box, n)
    with torch.no_grad():
        logu = torch.cat([-energy(c.to(device)).double().cpu() for c in pts.split(65536)])
    return pts, area, logu


def trace_point(target, energy, alg, device, n) -> dict[str, float]:
    out = {}
    if target.has_modes and target.dim == 2:
        pts, _, logu = _ebm_grid(energy, target.box, n, device)
        if torch.isfinite(logu).all():
            for k, w in enumerate(grid_mode_weights(logu, target.assign(pts), target.n_modes)):
                out[f"ebm_weight[{k}]"] = float(w)
    neg = alg.negatives()
    if target.has_modes and neg is not None:
        for k, w in enumerate(sample_mode_weights(target.assign(neg.cpu()), target.n_modes)):
            out[f"neg_weight[{k}]"] = float(w)
    return out


def evaluate(target, energy, alg, cfg, device) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All metrics the target's ground truth allows, and arrays for the plots."""
    m: dict[str, float] = {}
    art: dict[str, np.ndarray] = {}
    energy.eval()
    negs = alg.draw_negatives(cfg.n_negatives).cpu()
    art["negatives"] = negs[:2000].numpy()
    if target.dim == 2:
        pts, area, logu = _ebm_grid(energy, target.box, cfg.eval_grid, device)
        if not torch.isfinite(logu).all():
            raise Diverged(-1, "non-finite energy on the evaluation grid")
        log_z = grid_log_normalizer(logu, area)
        art["grid_log_density"] = (logu - log_z).float().reshape(cfg.eval_grid, cfg.eval_grid).numpy()
        art["box"] = np.asarray(target.box, dtype=float)
        if target.has_density:
            x = target.test_set(cfg.n_eval_samples)
            with torch.no_grad():
                logp_model = -energy(x.to(device)).double().cpu() - log_z
            logp_true = target.log_prob(x.double())
            true_log_z = grid_log_normalizer(target.log_prob(pts.double()), area)
            m["logp_median_sq_error"] = median_sq_log_density_error(logp_model, logp_true - true_log_z)
        if target.has_modes:
            labels = target.assign(pts)
            w_true = target.mode_weights.numpy()
            w_ebm = grid_mode_weights(logu, labels, target.n_modes)
            w_neg = sample_mode_weights(target.assign(negs), target.n_modes)
            w_init = sample_mode_weights(target.assign(alg.chain_starts(cfg.n_negatives).cpu()), target.n_modes)
            for k in range(target.n_modes):
                m[f"ebm_weight[{k}]"] = float(w_ebm[k])
                m[f"neg_weight[{k}]"] = float(w_neg[k])
            for k, e in enumerate(weight_relative_error(w_ebm, w_true)):
                m[f"ebm_weight_relerr[{k}]"] = float(e)
            m["ebm_weight_mse"] = weight_mse(w_ebm, w_true)  # 000 Table 3, column 4
            m["neg_weight_mse"] = weight_mse(w_neg, w_true)
            m["neg_weight_mse_vs_ebm"] = weight_mse(w_neg, w_ebm)  # 000 Table 3, column 3
            m["init_weight_mse_vs_ebm"] = weight_mse(w_init, w_ebm)  # 000 Table 3, column 2
    m.update(alg.extra_metrics(target.test_set(cfg.n_eval_samples).to(device=device, dtype=dtype_of(energy))))
    chains = alg.run_chains(alg.chain_starts(cfg.n_chains), cfg.n_draws).cpu().double().numpy()
    if not np.isfinite(chains).all():
        raise Diverged(-1, "non-finite states in the evaluation chains")
    m["max_rhat"] = float(rhat(chains).max())
    m["max_rhat_classic"] = float(classic_rhat(chains).max())
    m["min_ess_bulk"] = float(ess_bulk(chains).min())
    m["min_ess_tail"] = float(ess_tail(chains).min())
    return m, art


def run_cell(cell: Cell, device: str = "cpu", progress: bool = False, threads: int | None = None):
    """Train and evaluate one cell. Returns (rows, traces, artifacts) ready for the ResultStore."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cfg = cell.train
    target = datasets.get_target(cell.target)
    gen = torch.Generator().manual_seed(cell.seed)
    data = target.sample(cfg.n_data, gen).to(dev)
    torch.manual_seed(cell.seed)  # initial parameters and chains are shared by all algorithms of a seed
    energy = make_energy(cfg.energy, target.dim).to(dev)
    work = Work()
    alg = algorithms.ALGORITHMS[cell.algorithm](Problem(target, data, dev, work), energy, cell.algo)
    n_iters = cfg.iterations()
    traces, status, reason, metrics, art = [], "ok", "", {}, {}
    t0 = time.perf_counter()
    it = 0
    try:
        bar = tqdm(range(1, n_iters + 1), desc=f"{cell.algorithm}/{cell.target}/s{cell.seed}",
                   disable=not progress, leave=False, mininterval=1.0)
        perm, pos = torch.randperm(cfg.n_data, device=dev), 0
        for it in bar:
            if pos + cfg.batch_size > cfg.n_data:
                perm, pos = torch.randperm(cfg.n_data, device=dev), 0
            logs = alg.step(data[perm[pos:pos + cfg.batch_size]])
            pos += cfg.batch_size
            if cfg.eval_every and (it % cfg.eval_every == 0 or it == n_iters):
                point = {**logs, **trace_point(target, energy, alg, dev, cfg.trace_grid)}
                traces += [{**cell.key(), "iteration": it, "metric": k, "value": v} for k, v in point.items()]
                bar.set_postfix(loss=f"{logs['loss']:.3g}")
        train_time = time.perf_counter() - t0
        train_work = work.as_dict()
        metrics, art = evaluate(target, energy, alg, cfg, dev)
    except Diverged as e:
        status, reason = "diverged", f"step {e.step if e.step >= 0 else it}: {e.reason}"
        train_time, train_work = time.perf_counter() - t0, work.as_dict()
        metrics = {"diverged_at": float(e.step if e.step >= 0 else it)}
    wall = time.perf_counter() - t0
    common = {
        **cell.key(),
        "target_version": target.version,
        "status": status,
        "reason": reason,
        "n_iters": n_iters,
        "train_time_s": round(train_time, 3),
        "wall_time_s": round(wall, 3),
        "time_per_iter_s": train_time / max(it, 1),
        **train_work,
        "device": str(dev),
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_json(cell.config()),
    }
    rows = [{**common, "metric": k, "value": v} for k, v in metrics.items()]
    return rows, traces, art
