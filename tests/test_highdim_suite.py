"""The highdim suite: R-hat over training, the audit in a run, its tables on fixtures with known answers, and
its configuration checks."""

import bench  # noqa: F401

# isort: split
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from bench import suite as suite_mod
from bench.cli import main
from bench.evaluation import rhat_point
from bench.suite import TrainConfig, load_suite, resolve_cells


class _Chains:
    """A stand-in algorithm whose sampler returns given chains (shape (chain, draw, dim))."""

    name = "fixture"
    stochastic_chains = True

    def __init__(self, chains):
        self.chains = torch.as_tensor(chains)
        self.calls = 0

    def chain_starts(self, n):
        return self.chains[:n, 0]

    def run_chains(self, x0, n_draws):
        self.calls += 1
        return self.chains[: x0.shape[0], :n_draws]


class _Probe:
    #: a target without modes: its chains get no chain_mode_stay (tested in tests/test_evaluation.py)
    target = SimpleNamespace(has=lambda capability: False)

    def __init__(self, cfg):
        self.cfg = cfg


def _cfg(**kw):
    base = dict(n_iters=100, eval_every=10, rhat_every=3, n_chains=64, n_draws=150, burn_in=50)
    return TrainConfig(**{**base, **kw})


def test_rhat_point_is_taken_at_every_kth_trace_point_and_the_last():
    alg = _Chains(np.random.default_rng(0).normal(size=(64, 200, 3)))
    probe = _Probe(_cfg())
    taken = [it for it in range(10, 101, 10) if rhat_point(probe, alg, it, last=it == 100)]
    assert taken == [30, 60, 90, 100]
    assert rhat_point(_Probe(_cfg(rhat_every=0)), alg, 30, last=True) == {}


def test_rhat_point_known_answers():
    """Independent N(0, 1) chains mix (R-hat ~ 1); chains stuck at different offsets do not."""
    rng = np.random.default_rng(1)
    mixed = rng.normal(size=(64, 200, 3))
    out = rhat_point(_Probe(_cfg()), _Chains(mixed), 30, last=False)
    assert out["max_rhat"] < 1.05 and out["max_rhat_classic"] < 1.05
    assert out["min_ess_bulk"] > 0.5 * 64 * 150  # burn-in dropped: 150 draws per chain
    stuck = mixed * 0.1 + rng.choice([-3.0, 3.0], size=(64, 1, 1))
    out = rhat_point(_Probe(_cfg()), _Chains(stuck), 30, last=False)
    assert out["max_rhat"] > 1.5 and out["max_rhat_classic"] > 1.5
    # a noise-free sampler's chains are reported as such, not as a mixing figure
    alg = _Chains(stuck)
    alg.stochastic_chains = False
    assert set(rhat_point(_Probe(_cfg()), alg, 30, last=False)) == {"max_rhat_deterministic"}


def test_rhat_point_drops_the_burn_in():
    """Chains that start far apart and mix after 50 steps: R-hat ~ 1 once the burn-in of 50 is dropped."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 200, 2))
    x[:, :50] += rng.choice([-20.0, 20.0], size=(64, 1, 1))
    assert rhat_point(_Probe(_cfg()), _Chains(x), 30, last=False)["max_rhat"] < 1.05
    assert rhat_point(_Probe(_cfg(burn_in=0)), _Chains(x), 30, last=False)["max_rhat"] > 1.1


def test_audit_needs_a_mixture_target(capsys, tmp_path, monkeypatch):
    """Checked before anything runs: one line, exit 2, nothing written."""
    monkeypatch.setattr(suite_mod, "SUITES_DIR", tmp_path)
    (tmp_path / "bad.toml").write_text(
        'targets = ["swiss_roll"]\nalgorithms = ["ula_ebm"]\n[fidelity.smoke]\n[fidelity.smoke.defaults]\n'
        "n_iters = 2\naudit_chains = 4\n")
    out = tmp_path / "out"
    assert main(["run", "--suite", "bad", "--fidelity", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: ") and "audit_chains needs a Gaussian-mixture" in err[0]
    assert not out.exists()


def test_suite_paper_settings_follow_000_table_7():
    cells = {c.algorithm: c for c in resolve_cells(load_suite("highdim"), "paper", None, ["hd_mixture32"], seeds=1)}
    assert set(cells) == {"flowmc_ebm", "nt_ebm", "coopflow", "ula_ebm"}
    for c in cells.values():
        assert (c.train.n_data, c.train.batch_size, c.train.iterations()) == (50_000, 128, 58_594)
        assert getattr(c.algo, "n_persistent", 8192) == 8192  # CoopFlow has no persistent state
    u, n, co, f = (cells[a].algo for a in ("ula_ebm", "nt_ebm", "coopflow", "flowmc_ebm"))
    assert (u.step_size, u.n_steps, u.init, u.lr) == (1e-3, 512, "normal", 1e-2)
    assert (n.sampler, n.n_steps, n.lr, n.pretrain_steps, n.pretrain_lr) == ("mala", 128, 1e-2, 512, 1e-2)
    assert n.pretrain == "reverse_kl"  # 000 C.5
    assert (co.step_size, co.n_steps, co.lr) == (1e-4, 256, 1e-3)
    assert (f.n_steps, f.n_global, f.n_local, f.n_particles, f.subsample, f.lr) == (144, 1, 8, 128, 16, 1e-3)
    assert (f.flow_hidden, f.flow_depth, f.flow_layers) == (39, 3, 4)  # Table 6, d = 32


def _results(rows):
    base = {"suite": "highdim", "fidelity": "quick", "status": "ok"}
    return pd.DataFrame([{**base, "target": t, "algorithm": a, "seed": s, "metric": m, "value": v}
                         for t, a, s, m, v in rows])


def test_highdim_tables_on_a_fixture_with_known_answers():
    """The tables are made for the targets whose results hold their metrics, whatever their names: mixing for any
    target with R-hat, the sample weights for a target with an audit or with negatives' weights but no EBM weights;
    and the report has no empty section."""
    from bench import report, tables_highdim

    rows = [("hd_mixture16", "flowmc_ebm", s, "max_rhat", v) for s, v in enumerate([1.0, 2.0, 3.0])]
    rows += [("hd_mixture16", "flowmc_ebm", s, "chain_mode_stay", v) for s, v in enumerate([0.25, 0.5, 0.75])]
    rows += [("hd_mixture16", "flowmc_ebm", s, f"neg_weight[{k}]", w)
             for s in range(3) for k, w in enumerate([0.1, 0.2, 0.3, 0.4])]
    rows += [("hd_mixture16", "flowmc_ebm", s, f"audit_weight[{k}]", w + 0.01 * (s - 1))
             for s in range(3) for k, w in enumerate([0.4, 0.3, 0.2, 0.1])]
    rows += [("two_mode", "flowmc_ebm", 0, "max_rhat", 9.0), ("two_mode", "flowmc_ebm", 0, "neg_weight[0]", 0.5),
             ("two_mode", "flowmc_ebm", 0, "ebm_weight[0]", 0.5)]  # weighed on its grid: no sample-weights row
    res = _results(rows)
    mix = tables_highdim.mixing_table(res)
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)  # std of (1, 2, 3) is 1
    assert mix.loc[("hd_mixture16", "flowmc_ebm"), "max_rhat"] == f"2 ± {half:.2g}"
    assert mix.loc[("hd_mixture16", "flowmc_ebm"), "chain_mode_stay"] == f"0.5 ± {half / 4:.2g}"
    assert list(mix.columns[:2]) == ["max_rhat", "chain_mode_stay"]  # read beside R-hat
    assert mix.loc[("hd_mixture16", "flowmc_ebm"), "seeds"] == 3
    # seeds: the fewest that recorded any of the row's mixing metrics (a mean of 2 seeds is not one of 3)
    fewer = tables_highdim.mixing_table(_results([r for r in rows if r[3] != "chain_mode_stay" or r[2] < 2]))
    assert fewer.loc[("hd_mixture16", "flowmc_ebm"), "seeds"] == 2
    assert mix.loc[("two_mode", "flowmc_ebm"), "max_rhat"] == "9"
    w = tables_highdim.weights_table(res)
    assert "two_mode" not in w.index.get_level_values(0)
    hd = res[res["target"] == "hd_mixture16"]
    names = [name for name, _, _ in report.sections(hd)]
    assert {"mixing", "sample_weights", "key_metrics", "summary"} <= set(names)
    assert "mode_weights" not in names  # no EBM weights in high dimension: no empty "Final EBM mode weights"
    assert all(len(df) for _, _, df in report.sections(hd))
    np.testing.assert_allclose(w.loc[("hd_mixture16", "flowmc_ebm"), ["neg w0", "neg w3"]], [0.1, 0.4])
    np.testing.assert_allclose(w.loc[("hd_mixture16", "flowmc_ebm"), ["EBM w0", "EBM w3"]], [0.4, 0.1])
    np.testing.assert_allclose(w.loc[("hd_mixture16", "p* (true)"), ["EBM w0", "EBM w1"]], [0.25, 0.25])
    assert "audit_rhat>1.1" not in w.columns  # no audit R-hat above 1.1: no flag
    # audits that did not mix are flagged: 2 of 3 seeds above 1.1 (one of them not finite)
    rows += [("hd_mixture16", "flowmc_ebm", s, "audit_max_rhat", v) for s, v in enumerate([1.05, 1.3, np.nan])]
    rows += [("hd_mixture16", "nt_ebm", s, "audit_max_rhat", 1.02) for s in range(3)]
    rows += [("hd_mixture16", "nt_ebm", s, "audit_weight[0]", 0.25) for s in range(3)]
    w = tables_highdim.weights_table(_results(rows))
    assert w.loc[("hd_mixture16", "flowmc_ebm"), "audit_rhat>1.1"] == "2/3"
    assert w.loc[("hd_mixture16", "nt_ebm"), "audit_rhat>1.1"] == ""
    assert any("did not mix" in n for n in w.attrs["notes"])


def test_audit_metrics_compare_negatives_with_the_audit():
    """neg_weight_mse_vs_audit is the MSE between the two weight vectors (known answer on an exact EBM); no audit
    without audit_chains."""
    import datasets
    from algorithms.energies import TargetEnergy
    from bench.evaluation import Probe, Quantities, measure

    t = datasets.get_target("hd_mixture16_unequal")
    neg = np.full(4, 0.25)
    for chains in (64, 0):
        probe = Probe(t, TargetEnergy(t), _cfg(audit_chains=chains, audit_draws=100, audit_burn_in=50,
                                               n_eval_samples=100), torch.device("cpu"))
        torch.manual_seed(0)
        out = measure(Quantities(probe, None, given={"negative_mode_weights": neg}), "audit")
        if not chains:
            assert out == {}
            continue
        w = np.array([out[f"audit_weight[{k}]"] for k in range(4)])
        assert out["neg_weight_mse_vs_audit"] == pytest.approx(float(np.mean((w - 0.25) ** 2)))
        assert out["neg_weight_mse_vs_audit"] == pytest.approx(0.0125, abs=0.004)  # mean of (0.15, .05, .05, .15)^2


def test_quick_nt_ebm_keeps_its_energies_bounded_where_fewer_latent_steps_run_away():
    """NT-EBM at the quick fidelity on hd_mixture16 (000 Table 7's lr 1e-2 and 128 latent MALA steps, reverse-KL
    flow on one of the four modes): after 40 iterations the energies are back at the scale of the flow's
    missing log-density (tens of nats) and the latent step size is near 1. The same cell with 16 latent
    steps per iteration (the quick fidelity until this was measured) runs away: the correction of the missing
    modes outruns its chains, whose step size is then driven toward its floor (measured in every seed: |E| >
    1e4 by iteration 50, h = 1e-8 by 150, 5e9 by 400)."""
    import copy
    import dataclasses

    import algorithms
    import datasets
    from algorithms.base import Problem
    from algorithms.energies import make_energy
    from algorithms.work import Work

    cell = resolve_cells(load_suite("highdim"), "quick", ["nt_ebm"], ["hd_mixture16"], seeds=1)[0]
    assert cell.algo.n_steps == 128 and cell.algo.lr == 1e-2
    target = datasets.get_target(cell.target)
    data = target.sample(40 * 128, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    energy = make_energy(cell.train.energy, target.dim, None)
    alg = algorithms.ALGORITHMS[cell.base](Problem(target, data, work=Work()), energy, cell.algo)
    with torch.no_grad():
        shares = target.assign(alg.flow.sample(2000)[0]).bincount(minlength=4) / 2000
    assert shares.max() > 0.95  # reverse KL has put the flow on one mode (as in every seed measured)
    few = copy.deepcopy(alg)
    few.config = dataclasses.replace(few.config, n_steps=16)

    def run(a):  # |E| and the latent step size, means over iterations 36-40
        e, h = [], []
        for i in range(40):
            logs = a.step(data[i * 128:(i + 1) * 128])
            e.append(max(abs(logs["energy_pos"]), abs(logs["energy_neg"])))
            h.append(logs["step_size"])
        return sum(e[-5:]) / 5, sum(h[-5:]) / 5

    # 128 steps: an excursion (|E| up to ~1e3 near iteration 25) that the chains catch up with; measured
    # |E| 4.8, h 1.07 at iteration 40. 16 steps: |E| 2.4e3 and growing, h 0.004 and falling
    e, h = run(alg)
    assert e < 100 and h > 0.3, (e, h)
    e, h = run(few)
    assert e > 1e3 and h < 2e-2, (e, h)


def test_quick_coopflow_keeps_000s_revision_length():
    """000 Table 7: 256 noise-free steps of h = 1e-4 (T h = 0.0256) and the flow frozen for < 5 % of training
    (App. C.1). The quick fidelity may cut T but not T h, nor raise h past 4x 000's (the rule the 2-D targets
    taught, tests/test_flow_algorithms.py): with its earlier 32 x 1e-4 (T h 8x shorter) every CoopFlow run at
    d = 16, 32 and 64 ran away by iteration 300-400 (energy spread > 1e4 nats); docs/choices.md "CoopFlow"."""
    suite = load_suite("highdim")
    for fidelity in ("quick", "paper"):
        for cell in resolve_cells(suite, fidelity, ["coopflow"], None, seeds=1):
            a = cell.algo
            assert a.setting == "pre" and a.n_steps * a.step_size == pytest.approx(256 * 1e-4)
            assert a.step_size <= 4 * 1e-4 and a.lr == 1e-3
            assert 0 < a.warmup_iters < 0.05 * cell.train.iterations()
    (paper,) = resolve_cells(suite, "paper", ["coopflow"], ["hd_mixture32"], seeds=1)
    assert (paper.algo.n_steps, paper.algo.step_size, paper.algo.flow_mask) == (256, 1e-4, "half")


def test_quick_coopflow_energy_stays_bounded_where_the_shorter_revision_runs_away():
    """CoopFlow at the quick fidelity on hd_mixture16 (seed 0): its flow stays at its base Gaussian (the
    half-split flow cannot learn this mixture, tests/test_highdim.py), so the noise-free revision must carry the
    flow's samples to the data, and the EBM steepens until it does. With 000's revision length (64 x 4e-4) that
    takes energies of hundreds of nats; with the quick fidelity's former 32 x 1e-4 (T h 8x shorter) they run
    into the thousands by iteration 300 and keep growing (measured: max |E(x+)|, |E(x~)| over iterations
    296-300: 272 against 4,267)."""
    import dataclasses

    import algorithms
    import datasets
    from algorithms.base import Problem
    from algorithms.energies import make_energy
    from algorithms.work import Work

    cell = resolve_cells(load_suite("highdim"), "quick", ["coopflow"], ["hd_mixture16"], seeds=1)[0]
    target = datasets.get_target(cell.target)
    data = target.sample(300 * 128, torch.Generator().manual_seed(0))

    def run(**override):  # max |E| of the data and of the revised samples, over iterations 296-300
        torch.manual_seed(0)
        energy = make_energy(cell.train.energy, target.dim, None)
        alg = algorithms.ALGORITHMS[cell.base](Problem(target, data, work=Work()), energy,
                                               dataclasses.replace(cell.algo, **override))
        e = []
        for i in range(300):
            logs = alg.step(data[i * 128:(i + 1) * 128])
            e.append(max(abs(logs["energy_pos"]), abs(logs["energy_neg"])))
        return max(e[-5:])

    now, before = run(), run(n_steps=32, step_size=1e-4)
    assert now < 1000 and before > 2000, (now, before)
