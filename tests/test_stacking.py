"""Seeds trained together (algorithms/stacking.py, bench.runner.run_stack, ``bench run --stack-seeds``): seed s of a
stack gives the results of its run alone, diverges on its own, and is stored and resumed as its own cell.

Tolerance. A stacked seed draws the same random numbers in the same order as its run alone, so its numbers differ
only by floating-point rounding where a batched product or a per-seed mean sums in another order than the single
one. On an AMD EPYC (MKL) the final metrics come out bitwise equal; the logged loss differs in its last bits
(a mean over a row of a (S, n) tensor); flowMC-EBM's and NT-EBM's smoke runs come out bitwise equal, metrics and traces.
CoopFlow's are bitwise equal until its flow first learns, then within 1e-8 relative (``StackedCoopFlow``). On an
Intel Xeon the batched products round otherwise from the first iteration (1-4 float32 ulps).
The comparisons allow relative 1e-4 (absolute 1e-5): float32 rounding of
another summation order, grown over the dozen training iterations of these runs, stays far below it, while any
error of the streams (a draw from another seed's stream, or in another order), of the gradient (a mean over the
seeds instead of a sum: visible with SGD, which is not scale-free like Adam) or of the parameters' slicing changes
the numbers at the percent level or more. Jarzynski amplifies rounding (Adam's scale-free steps, resampling:
``StackedJarzynski``): its runs here are short (12 iterations, 64 walkers), where it has not grown yet."""

import copy
import dataclasses
import math
import time

import pytest
import torch

import algorithms
import datasets
from algorithms.contrastive import NON_FINITE
from algorithms.coopflow import FLOW_NON_FINITE, CoopFlow
from algorithms.energies import MLPEnergy, ToyMLP
from algorithms.flowmc_ebm import FlowMCEBM
from algorithms.flows import RealNVP
from algorithms.mcmc import ISIR, MALA, Adaptation, ChainStats, FlowMC
from algorithms.nt_ebm import NTEBM
from algorithms.stacking import StackedMLP, StackedRealNVP, stack_of, stackable
from algorithms.tilt import GaussianReference, tilt
from algorithms.work import Work
from bench import runner as runner_mod
from bench import sweep as sweep_mod
from bench.checkpoint import checkpoint_for
from bench.runner import Abandoned, run_cell, run_stack
from bench.store import ResultStore
from bench.suite import load_suite, resolve_cells
from bench.sweep import run_sweep, units

RTOL, ATOL = 1e-4, 1e-5


def smoke_cells(algorithm="ula_ebm", seeds=3, n_iters=12, **algo):
    cells = resolve_cells(load_suite("toy2d"), "smoke", [algorithm], ["four_mode"], seeds)
    return [dataclasses.replace(c, train=dataclasses.replace(c.train, n_iters=n_iters, eval_every=4),
                                algo=dataclasses.replace(c.algo, **algo)) for c in cells]


def by_metric(rows):
    return {r["metric"]: r["value"] for r in rows}


def assert_same_run(alone, stacked):
    """The rows and traces of a seed's run alone and of the same seed in a stack agree (tolerance: module doc)."""
    (rows1, traces1, _), (rows2, traces2, _) = alone, stacked
    for col in ("status", "reason", "n_iters", "grad_evals", "energy_evals", "cell_id", "seed"):
        assert rows1[0][col] == rows2[0][col], col
    m1, m2 = by_metric(rows1), by_metric(rows2)
    assert m1.keys() == m2.keys()
    for k in m1:
        assert m2[k] == pytest.approx(m1[k], rel=RTOL, abs=ATOL, nan_ok=True), k
    assert [(t["iteration"], t["metric"]) for t in traces1] == [(t["iteration"], t["metric"]) for t in traces2]
    for t1, t2 in zip(traces1, traces2, strict=True):
        where = (t1["iteration"], t1["metric"])
        assert t2["value"] == pytest.approx(t1["value"], rel=RTOL, abs=ATOL, nan_ok=True), where


@pytest.mark.parametrize("activation,temperature", [("leaky_relu", 1.0), ("swish", 0.25)])
def test_the_stacked_energy_is_each_member_on_its_own_slice(activation, temperature):
    torch.manual_seed(0)
    members = [MLPEnergy(2, (8, 16), activation, temperature=temperature) for _ in range(3)]
    stacked = StackedMLP(members)
    x = torch.randn(3, 10, 2)
    u, g = stacked.value_and_grad(x, work := Work())
    assert work.grad_evals == 10  # counted per seed
    assert torch.equal(stacked.grad(x, work2 := Work()), g) and work2.as_dict() == work.as_dict()  # u skipped
    for s, m in enumerate(members):
        u1, g1 = m.value_and_grad(x[s], Work())
        torch.testing.assert_close(u[s], u1)
        torch.testing.assert_close(g[s], g1)
        torch.testing.assert_close(stacked(x)[s], m(x[s]))
    # and back: stack row s written into a fresh member computes member s
    fresh = stacked.write_member(1, MLPEnergy(2, (8, 16), activation, temperature=temperature))
    torch.testing.assert_close(fresh(x[1]), members[1](x[1]))
    assert [n for n, _ in stacked.named_members()] == [n for n, _ in members[0].named_parameters()]


def test_a_stacked_tilted_energy_is_each_tilted_member_on_its_own_slice():
    torch.manual_seed(0)
    members = [ToyMLP(2) for _ in range(3)]
    for m in members:
        tilt(m, GaussianReference(1.5))
    stacked = StackedMLP(members)
    x = 3 * torch.randn(3, 50, 2)
    u, g = stacked.value_and_grad(x, Work())
    assert torch.equal(stacked.grad(x, Work()), g)
    for s, m in enumerate(members):
        u1, g1 = m.value_and_grad(x[s], Work())  # autograd through the tilt's hook
        torch.testing.assert_close(u[s], u1)
        torch.testing.assert_close(g[s], g1)
        torch.testing.assert_close(stacked(x)[s], m(x[s]))
    # Gaussians of the seeds' own widths (flowMC-EBM's base fitted to each seed's data): row s against its own
    other = ToyMLP(2)
    tilt(other, GaussianReference(2.0))
    pair = StackedMLP([members[0], other])
    u, g = pair.value_and_grad(x[:2], Work())
    for s, m in enumerate([members[0], other]):
        u1, g1 = m.value_and_grad(x[s], Work())
        torch.testing.assert_close(u[s], u1)
        torch.testing.assert_close(g[s], g1)
        torch.testing.assert_close(pair(x[:2])[s], m(x[s]))
        with torch.no_grad():  # its own workspace, kept between calls (of other sizes too)
            for n in (50, 20, 50):
                torch.testing.assert_close(pair.value(x[:2, :n], Work())[s], m.value(x[s, :n], Work()))
    with pytest.raises(TypeError):  # tilted and untilted
        StackedMLP([members[0], ToyMLP(2)])
    lam = ToyMLP(2)
    tilt(lam, lambda y: y.pow(2).sum(-1))
    with pytest.raises(TypeError):  # a reference without its gradient
        StackedMLP([lam])


def test_the_stacked_flow_is_each_member_on_its_own_slice():
    torch.manual_seed(0)
    members = [RealNVP(2, 4, 16, 2, base_scale=s, identity_init=False) for s in (0.5, 1.0, 2.0)]
    flow = StackedRealNVP(members)
    x = 2 * torch.randn(3, 10, 2)
    (y, ladj), (z, ladj_inv), lp = flow(x, work := Work()), flow.inverse(x), flow.log_prob(x)
    assert work.flow_passes == 10  # counted per seed
    for k, m in enumerate(members):
        for got, want in zip((y[k], ladj[k], z[k], ladj_inv[k], lp[k]), (*m(x[k]), *m.inverse(x[k]), m.log_prob(x[k])),
                             strict=True):
            torch.testing.assert_close(got, want)
    # seed k's draws from its own generator: the draws of its flow alone on a global stream in that state
    y, lp = flow.sample(7, None, [torch.Generator().manual_seed(k) for k in range(3)])
    for k, m in enumerate(members):
        torch.manual_seed(k)
        y1, lp1 = m.sample(7)
        torch.testing.assert_close(y[k], y1)
        torch.testing.assert_close(lp[k], lp1)
    # and back: row 1 written into a fresh member computes member 1; rows kept in another order
    fresh = flow.write_member(1, RealNVP(2, 4, 16, 2, base_scale=1.0))
    torch.testing.assert_close(fresh.log_prob(x[1]), members[1].log_prob(x[1]))
    flow.keep_rows(torch.tensor([2, 0]))
    lp = flow.log_prob(x[[2, 0]])
    torch.testing.assert_close(lp[0], members[2].log_prob(x[2]))
    torch.testing.assert_close(lp[1], members[0].log_prob(x[0]))
    with pytest.raises(TypeError):
        StackedRealNVP([members[0], RealNVP(2, 4, 8, 2)])


def test_flowmc_with_a_seed_axis_runs_each_seed_as_its_run_alone():
    """i-SIR and adaptive MALA on stacked chains (S, n, d), a stacked tilted energy and a stacked flow: seed k's chain,
    step size and acceptance counts are those of its sampler alone, on a global stream in its generator's state."""
    torch.manual_seed(0)
    energies, flows = [ToyMLP(2) for _ in range(3)], []
    for k, e in enumerate(energies):
        tilt(e, GaussianReference(1.0 + k))  # each seed its own base (flowMC-EBM fits sigma to the seed's data)
        flows.append(RealNVP(2, 4, 16, 2, base_scale=1.0 + k, identity_init=False))
    steps = [0.05, 0.3, 1.0]

    def sampler(h, stats=ChainStats):
        return FlowMC(MALA(h, Adaptation(0.75, 1.5, 0.02)), ISIR(8), 1, 3, local=stats(), glob=stats())

    x0 = torch.randn(3, 16, 2)
    alone = []
    for k in range(3):
        torch.manual_seed(10 + k)
        s = sampler(steps[k])
        alone.append((s.run(energies[k], flows[k], x0[k], 9, work1 := Work(), keep_chain=True), s))
    stacked = sampler(list(steps), lambda: [ChainStats() for _ in range(3)])
    gens = [torch.Generator().manual_seed(10 + k) for k in range(3)]
    chain = stacked.run(StackedMLP(energies), StackedRealNVP(flows), x0, 9, work := Work(), keep_chain=True,
                        generators=gens)
    assert chain.shape == (3, 16, 9, 2) and work == work1  # the work counted per seed
    for k, (c, s) in enumerate(alone):
        torch.testing.assert_close(chain[k], c)
        assert stacked.mala.step_size[k] == s.mala.step_size
        assert (stacked.local[k], stacked.glob[k]) == (s.local, s.glob)
    assert len(set(stacked.mala.step_size)) == 3 and len({(g.accepted, st.accepted) for g, st in
                                                          zip(stacked.glob, stacked.local, strict=True)}) == 3


def test_energies_of_different_architectures_do_not_stack():
    with pytest.raises(TypeError):
        StackedMLP([ToyMLP(2), ToyMLP(3)])
    with pytest.raises(TypeError):
        StackedMLP([MLPEnergy(2, (8,), "leaky_relu", slope=0.05), MLPEnergy(2, (8,), "leaky_relu", slope=0.2)])


#: Jarzynski with a trigger that resamples within the 12 iterations of these runs (the smoke walkers' ESS falls below
#: 1 / (1 + c) after 6-9 iterations). With Adam the energy's last bias is frozen: its gradient in the weighted loss
#: (eq. 11) is 1 - sum_i p_i = 0 up to rounding, and Adam, scale-free, turns that rounding noise into steps of about
#: the learning rate, so in any two runs whose sums round differently (a stack, another BLAS) the bias, and with it
#: the model's log Z (``log_z_change``: the bias shifts log Z by -b exactly, nothing else), walks apart by ~lr per
#: iteration (measured: 3e-4 after 12 iterations, every other number within 1e-6). With SGD it learns: its steps
#: are lr times that rounding.
RESAMPLES = {"resample_c": 0.0005, "param_lr": {"net.8.bias": 0.0}}
#: flowMC-EBM with two i-SIR and two MALA steps per iteration, negatives subsampled (000 Table 5: k = 2), and a MALA
#: step size whose acceptance is near the target, so that each seed adapts it its own way
FLOWMC = {"n_steps": 4, "n_local": 1, "subsample": 2, "n_particles": 4, "step_size": 2.0}
#: NT-EBM with four latent MALA steps per iteration and a step size whose acceptance is near the target, so that each
#: seed adapts it its own way
NT = {"n_steps": 4, "step_size": 1.0, "adapt_factor": 1.1}
#: CoopFlow with a revision that moves the flow's draws (T h = 0.016; the smoke default's h = 4.5e-4 hardly does) and
#: a warm-up that ends within the runs (the flow frozen for 3 iterations, then learning)
COOP = {"n_steps": 8, "step_size": 2e-3, "warmup_iters": 3}


@pytest.mark.parametrize("algorithm,seeds,algo", [
    ("ula_ebm", 1, {}), ("ula_ebm", 3, {}), ("ula_ebm", 3, {"optimizer": "sgd", "lr": 0.05}),
    ("cd", 3, {"restart_every": 2}), ("short_run", 3, {}),
    ("jarzynski", 1, RESAMPLES), ("jarzynski", 3, RESAMPLES),
    ("jarzynski", 3, {"resample_c": 0.0005, "optimizer": "sgd", "lr": 0.05, "resampling": "multinomial"}),
    ("jarzynski", 3, {"resample_every": 3, "resampling": "stratified", "param_lr": {"net.8.bias": 0.0}}),
    ("flowmc_ebm", 1, FLOWMC), ("flowmc_ebm", 3, FLOWMC), ("flowmc_ebm", 3, {}),
    ("flowmc_ebm", 3, {**FLOWMC, "optimizer": "sgd", "lr": 0.05, "flow_lr": 1e-3}),
    ("nt_ebm", 1, NT), ("nt_ebm", 3, NT), ("nt_ebm", 3, {**NT, "optimizer": "sgd", "lr": 0.05}),
    ("coopflow", 1, COOP), ("coopflow", 3, COOP), ("coopflow", 3, {}),
    ("coopflow", 3, {**COOP, "optimizer": "sgd", "lr": 0.05, "flow_lr": 1e-3}),
])
def test_a_stacked_seed_gives_the_results_of_its_run_alone(algorithm, seeds, algo):
    cells = smoke_cells(algorithm, seeds, **algo)
    alone = [run_cell(c, threads=1) for c in cells]
    stacked = run_stack(cells, threads=1)
    assert [k for k, _ in stacked] == [c.key() for c in cells]
    for a, (_, s) in zip(alone, stacked, strict=True):
        assert_same_run(a, s)
        assert s[0][0]["stacked_seeds"] == seeds and "stacked_seeds" not in a[0][0]
        if algorithm == "jarzynski":  # the walkers were resampled (each seed's draws from its own stream)
            assert by_metric(a[0])["n_resamples"] > 0 and a[0][0]["status"] == "ok"
    if algo in (FLOWMC, NT) and seeds > 1:  # each seed adapted its own MALA step size, in the stack too
        assert len({by_metric(rows)["step_size"] for _, (rows, _, _) in stacked}) == seeds


def test_a_stacked_flowmc_seed_is_an_ordinary_flowmc_ebm():
    cells = smoke_cells("flowmc_ebm", 2, **FLOWMC)
    seeds = [runner_mod._Seed(c, torch.device("cpu")) for c in cells]
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds])
    for _ in range(3):
        logs, ok = stack.step(torch.stack([s.data[:32] for s in seeds]))
    assert ok == [True, True] and logs[0]["step_size"] != logs[1]["step_size"]
    for k, s in enumerate(seeds):
        m = stack.member(k)
        assert type(m) is FlowMCEBM and m is s.alg and m._it == 3 and m.sampler.mala.step_size == logs[k]["step_size"]
        x = 3 * torch.randn(20, 2)
        torch.testing.assert_close(m.energy(x), stack.energy(x.expand(2, -1, -1))[k])
        torch.testing.assert_close(m.flow.log_prob(x), stack.flow.log_prob(x.expand(2, -1, -1))[k])
        torch.testing.assert_close(m.negatives(), stack._neg[k])
        assert m.sample(m.chain_starts(16)).shape == (16 * 2, 2)  # flowMC with k = 2 subsampling, as trained


def test_a_stacked_nt_ebm_seed_is_an_ordinary_nt_ebm():
    cells = smoke_cells("nt_ebm", 2, **NT)
    seeds = [runner_mod._Seed(c, torch.device("cpu")) for c in cells]
    flows = [[p.clone() for p in s.alg.flow.parameters()] for s in seeds]
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds])
    for _ in range(8):
        logs, ok = stack.step(torch.stack([s.data[:32] for s in seeds]))
    assert ok == [True, True] and logs[0]["step_size"] != logs[1]["step_size"]
    for k, s in enumerate(seeds):
        m = stack.member(k)
        assert type(m) is NTEBM and m is s.alg and m._it == 8 and m.sampler.step_size == logs[k]["step_size"]
        assert m.stats.rate == logs[k]["local_accept"]
        assert all(torch.equal(p, q) for p, q in zip(m.flow.parameters(), flows[k], strict=True))  # fixed (Alg. 1)
        x = 3 * torch.randn(20, 2)
        torch.testing.assert_close(m.raw(x), stack.energy(x.expand(2, -1, -1))[k])
        torch.testing.assert_close(m.latent(x), stack.latent(x.expand(2, -1, -1))[k])
        torch.testing.assert_close(m.negatives(), stack._neg[k])
        assert m.sample(m.chain_starts(16)).shape == (16, 2)


def test_a_stacked_coopflow_seed_is_an_ordinary_coopflow():
    cells = smoke_cells("coopflow", 2, **COOP)
    seeds = [runner_mod._Seed(c, torch.device("cpu")) for c in cells]
    pretrained = [[p.clone() for p in s.alg.flow.parameters()] for s in seeds]
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds])
    for it in range(1, 6):
        logs, ok = stack.step(torch.stack([s.data[:32] for s in seeds]))
        assert ok == [True, True] and ("flow_loglik_neg" in logs[0]) == (it > COOP["warmup_iters"])
        if it == COOP["warmup_iters"]:  # frozen during the warm-up (each seed's own pre-trained flow)
            for k in range(2):
                frozen = stack.flow.write_member(k, copy.deepcopy(seeds[k].alg.flow))
                assert all(torch.equal(p, q) for p, q in zip(frozen.parameters(), pretrained[k], strict=True))
    assert logs[0]["langevin_shift"] > 0 and logs[0]["loss"] != logs[1]["loss"]
    for k, s in enumerate(seeds):
        m = stack.member(k)
        assert type(m) is CoopFlow and m is s.alg and m._it == 5
        assert not all(torch.equal(p, q) for p, q in zip(m.flow.parameters(), pretrained[k], strict=True))  # learned
        x = 3 * torch.randn(20, 2)
        torch.testing.assert_close(m.energy(x), stack.energy(x.expand(2, -1, -1))[k])
        torch.testing.assert_close(m.flow.log_prob(x), stack.flow.log_prob(x.expand(2, -1, -1))[k])
        torch.testing.assert_close(m.negatives(), stack._neg[k])
        assert m.sample(m.chain_starts(16)).shape == (16, 2)


def test_a_stacked_coopflow_seed_is_its_run_alone_to_the_last_bits_until_its_flow_learns():
    """Through the warm-up (the flow frozen) a stacked seed's flow draws, revised samples and energy are those of its
    run alone to the last bits: bitwise on an AMD EPYC; on an Intel Xeon (2.8 GHz, 2 cores) the batched products
    round otherwise by 1-4 float32 ulps (revised samples within 4.8e-7 of magnitudes 4-7, parameters within 4e-8),
    so the check allows 1e-6 relative and absolute, far below what another draw or step would change. The first
    learning step of the stacked flow rounds otherwise (``StackedCoopFlow``), so from then on they agree up to
    rounding that grows (``test_a_stacked_seed_gives_the_results_of_its_run_alone``)."""
    cells, cpu = smoke_cells("coopflow", 3, **COOP), torch.device("cpu")
    seeds = [runner_mod._Seed(c, cpu) for c in cells]
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds])
    alone = [runner_mod._Seed(c, cpu) for c in cells]
    b = cells[0].train.batch_size
    for it in range(COOP["warmup_iters"] + 1):
        stack.step(torch.stack([s.data[s.perm[it * b:(it + 1) * b]] for s in seeds]))
        for k, s in enumerate(alone):
            torch.set_rng_state(s.gen.get_state())  # the global stream of its run alone
            s.alg.step(s.data[s.perm[it * b:(it + 1) * b]])
            s.gen.set_state(torch.get_rng_state())
            # revised before the flow learns
            torch.testing.assert_close(stack._neg[k], s.alg.negatives(), rtol=1e-6, atol=1e-6, msg=f"{(it, k)}")
            if it < COOP["warmup_iters"]:
                for p, q in zip(stack.energy.params, s.alg.energy.parameters(), strict=True):
                    torch.testing.assert_close(p[k], q, rtol=1e-6, atol=1e-6, msg=f"{(it, k)}")


def test_a_coopflow_seed_whose_flow_likelihood_turns_non_finite_leaves_the_stack_with_its_reason():
    """CoopFlow's run alone tests its flow's likelihood of the revised samples before the energy's step and says
    so (``FLOW_NON_FINITE``): a stacked seed whose flow turns NaN gives that reason, the others the usual one, and go
    on as a stack of them alone would."""
    cells, cpu = smoke_cells("coopflow", 3, **COOP), torch.device("cpu")

    def batches(seeds):
        return torch.stack([s.data[:32] for s in seeds])

    def poison(flow, row=None):
        with torch.no_grad():
            w = flow.layers[0].net[0].weight
            (w if row is None else w[row]).fill_(math.nan)

    seeds = [runner_mod._Seed(c, cpu) for c in cells]
    stack = stack_of([s.alg for s in seeds], [s.gen for s in seeds])
    others = [runner_mod._Seed(c, cpu) for c in (cells[0], cells[2])]
    clean = stack_of([s.alg for s in others], [s.gen for s in others])
    for _ in range(4):
        stack.step(batches(seeds))
        clean.step(batches(others))
    poison(stack.flow, row=1)
    logs, ok = stack.step(batches(seeds))
    assert ok == [True, False, True] and [stack.why(k) for k in (0, 1, 2)] == [NON_FINITE, FLOW_NON_FINITE, NON_FINITE]
    alone = runner_mod._Seed(cells[1], cpu).alg  # seed 1 alone, its flow turned NaN at the same iteration
    for _ in range(4):
        alone.step(seeds[1].data[:32])
    poison(alone.flow)
    with pytest.raises(algorithms.base.Diverged, match=FLOW_NON_FINITE) as e:
        alone.step(seeds[1].data[:32])
    assert e.value.step == 5
    stack.drop([0, 2])
    want, _ = clean.step(batches(others))
    assert [logs[0], logs[2]] == want
    for _ in range(3):
        assert stack.step(batches(others)) == clean.step(batches(others))
    for k in range(2):
        x = 3 * torch.randn(20, 2)
        assert torch.equal(stack.member(k).flow.log_prob(x), clean.member(k).flow.log_prob(x))


@pytest.mark.parametrize("algorithm,algo", [("ula_ebm", {}), ("jarzynski", RESAMPLES), ("flowmc_ebm", FLOWMC),
                                            ("nt_ebm", NT), ("coopflow", COOP)])
def test_a_seeds_result_does_not_depend_on_the_seeds_beside_it(algorithm, algo):
    cells = smoke_cells(algorithm, 3, **algo)
    full = {k["seed"]: v for k, v in run_stack(cells, threads=1)}
    pair = {k["seed"]: v for k, v in run_stack([cells[2], cells[0]], threads=1)}  # other company, other order
    for seed in (0, 2):
        assert_same_run(full[seed], pair[seed])


class PoisonsOneSeed(algorithms.ALGORITHMS["ula_ebm"]):
    """ULA-EBM whose chains turn NaN at its POISON_AT-th iteration in the run of the seed whose training data starts
    with ``poisoned`` (only that seed), in its run alone and in a stack alike."""

    POISON_AT = 6
    poisoned: float = math.nan
    stacks = True  # its chain starts add no draw to ULA-EBM's

    def start_chains(self, x_pos):
        x = super().start_chains(x_pos)
        if self._it + 1 == self.POISON_AT and float(self.problem.data[0, 0]) == self.poisoned:
            return x * math.nan
        return x


def poison(monkeypatch, cells, seed=1, at=PoisonsOneSeed.POISON_AT):
    """Register ``PoisonsOneSeed`` as ULA-EBM, poisoning the run of ``cells[seed]`` (its training data's first value,
    as the runner draws it) at iteration ``at``."""
    monkeypatch.setitem(algorithms.ALGORITHMS, "ula_ebm", PoisonsOneSeed)
    c = cells[seed]
    data = datasets.get_target(c.target).sample(c.train.n_data, torch.Generator().manual_seed(c.seed))
    monkeypatch.setattr(PoisonsOneSeed, "poisoned", float(data[0, 0]))
    monkeypatch.setattr(PoisonsOneSeed, "POISON_AT", at)


def only_seed_1_diverges(cells, reason):
    """Seeds 0-2 alone and stacked: seed 1 diverges at step 6 with ``reason``, the others finish; each stacked seed
    equals its run alone (the diverged one: outcome, step, work, trace points up to iteration 4 and the step
    scalars of iterations 1-5, bench.runner.RecentSteps). Returns the stack."""
    alone = [run_cell(c, threads=1) for c in cells]
    stacked = run_stack(cells, threads=1)
    assert alone[1][0][0]["status"] == "diverged" and alone[0][0][0]["status"] == alone[2][0][0]["status"] == "ok"
    assert alone[1][0][0]["reason"] == reason
    for a, (_, s) in zip(alone, stacked, strict=True):
        assert_same_run(a, s)
    points = sorted({t["iteration"] for t in stacked[1][1][1] if t["metric"] == "energy_spread"})
    assert points == [4] and max(t["iteration"] for t in stacked[0][1][1]) == 12
    assert sorted({t["iteration"] for t in stacked[1][1][1]}) == [1, 2, 3, 4, 5]
    return stacked


def test_a_diverging_seed_leaves_the_stack_and_the_others_go_on(monkeypatch):
    cells = smoke_cells("ula_ebm", 3)
    poison(monkeypatch, cells)
    only_seed_1_diverges(cells, "step 6: non-finite loss or negative samples")


def test_a_diverging_seed_is_reported_when_it_leaves_the_stack(monkeypatch, capsys):
    """With progress on, the seed that leaves a stack is named at once (its rows wait for the stack's end)."""
    cells = smoke_cells("ula_ebm", 3)
    poison(monkeypatch, cells)
    run_stack(cells, threads=1, progress=True)
    err = capsys.readouterr().err
    assert (f"ula_ebm/{cells[0].target}/s0,1,2: diverged, left the stack: seed 1 (step 6: non-finite loss or "
            "negative samples); seeds going on: 0, 2") in err
    run_stack(cells, threads=1)  # without progress, silent
    assert "left the stack" not in capsys.readouterr().err


class StackClock:
    """A clock for bench.runner that moves only when the stack takes a training step: 1 s of wall time and 2 s of
    CPU time per step (``time`` otherwise as usual)."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self):
        return self.t

    def process_time(self):
        return 2 * self.t

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_stacks_time_is_shared_among_the_seeds_training_at_the_time(monkeypatch, tmp_path):
    """Seeds 0-2 stacked for 12 iterations, seed 1 leaving at step 6, each step 1 s (2 s of CPU): the first 6 s are
    shared by three seeds, the last 6 s by two, so seed 1 costs 2 s and seeds 0 and 2 cost 2 + 3 = 5 s each, and
    the three add up to the stack's 12 s (dividing by the three seeds it started with would give 4 s each to the
    seeds that finish and leave 2 s of the stack's time to nobody)."""
    clock = StackClock()
    make_stack = runner_mod.stack_of

    def ticking_stack(*args):  # the stack's class ticks the clock at each step (a resumed stack is unpickled)
        st = make_stack(*args)
        cls = type(st)
        if not getattr(cls, "ticks", False):
            step = cls.step

            def timed_step(self, x):
                clock.t += 1.0
                return step(self, x)
            monkeypatch.setattr(cls, "step", timed_step)
            monkeypatch.setattr(cls, "ticks", True, raising=False)
        return st
    cells = smoke_cells("ula_ebm", 3)
    poison(monkeypatch, cells)
    monkeypatch.setattr(runner_mod, "stack_of", ticking_stack)
    monkeypatch.setattr(runner_mod, "time", clock)
    stacked = run_stack(cells, threads=1)
    first = [rows[0] for _, (rows, _, _) in stacked]
    assert [r["status"] for r in first] == ["ok", "diverged", "ok"]
    assert [r["train_time_s"] for r in first] == pytest.approx([5.0, 2.0, 5.0])
    assert [r["cpu_time_s"] for r in first] == pytest.approx([10.0, 4.0, 10.0])
    assert sum(r["train_time_s"] for r in first) == pytest.approx(12.0)
    # stopped after iteration 8 (seed 1 gone) and resumed from its checkpoint: the shares carry over
    clock.t = 0.0
    cells = [dataclasses.replace(c, code_version="test") for c in cells]
    ck = checkpoint_for(tmp_path, cells, every_s=0)
    calls = []
    with pytest.raises(Abandoned):
        run_stack(cells, threads=1, checkpoint=ck, stop=lambda: calls.append(1) or len(calls) > 8)
    assert clock.t == 8.0
    resumed = [rows[0] for _, (rows, _, _) in run_stack(cells, threads=1, checkpoint=ck)]
    assert [r["resumed_at"] for r in resumed] == ["8"] * 3
    assert [r["train_time_s"] for r in resumed] == pytest.approx([5.0, 2.0, 5.0])
    assert [r["cpu_time_s"] for r in resumed] == pytest.approx([10.0, 4.0, 10.0])


@pytest.mark.parametrize("algorithm,algo,reason", [
    ("jarzynski", RESAMPLES, "step 6: non-finite loss, walkers or weights"),
    ("flowmc_ebm", FLOWMC, "step 6: non-finite loss, flow likelihood or negative samples"),
    ("nt_ebm", NT, "step 6: non-finite loss or negative samples"),
    ("coopflow", COOP, "step 6: non-finite loss or negative samples")])
def test_a_diverging_seed_of_the_other_stacks_leaves_it_and_the_others_go_on(monkeypatch, algorithm, algo, reason):
    cells = smoke_cells(algorithm, 3, **algo)
    b, real = cells[0].train.batch_size, runner_mod._setup

    def poisoned(cell, dev, *built):
        """Seed 1's training data NaN where its 6th batch will read it (the batch order is the global stream's next
        draw after the setup, in its run alone and in a stack alike)."""
        out = real(cell, dev, *built)
        if cell.seed == 1:
            state = torch.get_rng_state()
            perm = torch.randperm(cell.train.n_data)
            torch.set_rng_state(state)
            out[1][perm[5 * b:6 * b]] = math.nan
        return out

    monkeypatch.setattr(runner_mod, "_setup", poisoned)
    stacked = only_seed_1_diverges(cells, reason)
    if algorithm == "jarzynski":
        assert all(by_metric(stacked[s][1][0])["n_resamples"] > 0 for s in (0, 2))  # resampled after the drop


class OwnStarts(algorithms.ALGORITHMS["ula_ebm"]):
    """A subclass with chain starts of its own that does not say they draw from the seed's stream."""

    def start_chains(self, x_pos):
        return super().start_chains(x_pos) + 0.01 * torch.randn_like(x_pos)


class OwnDraws(CoopFlow):
    """A CoopFlow whose flow samples are its own (not the flow's draws from the seed's stream)."""

    def flow_samples(self, n):
        return super().flow_samples(n) + 0.01 * torch.randn(n, 2)


def test_cells_that_do_not_stack_run_one_by_one(monkeypatch):
    cells = smoke_cells("nce_ebm", 2)
    assert not stackable(object())
    one = smoke_cells("ula_ebm", 1)[0]
    energy = ToyMLP(2)
    problem = algorithms.base.Problem(datasets.get_target("four_mode"), torch.randn(64, 2))
    assert stackable(algorithms.ALGORITHMS["ula_ebm"](problem, energy, one.algo))
    assert not stackable(OwnStarts(problem, energy, one.algo))
    calls = []
    real = runner_mod.run_cell
    monkeypatch.setattr(runner_mod, "run_cell", lambda c, *a, **k: calls.append(c.seed) or real(c, *a, **k))
    out = run_stack(cells, threads=1)
    assert calls == [0, 1] and all("stacked_seeds" not in rows[0] for _, (rows, _, _) in out)
    # Jarzynski's mini-batch Alg. 2 and the public script's weight update train one seed per run
    assert runner_mod.may_stack(smoke_cells("jarzynski", 1)[0])
    for algo in ({"walker_batch": 16}, {"weight_update": "public_script"}):
        assert not runner_mod.may_stack(smoke_cells("jarzynski", 1, **algo)[0])
    jarz = algorithms.ALGORITHMS["jarzynski"]
    assert stackable(jarz(problem, ToyMLP(2), smoke_cells("jarzynski", 1)[0].algo))  # tilted by reference_std
    assert not stackable(jarz(problem, ToyMLP(2), smoke_cells("jarzynski", 1, walker_batch=16)[0].algo))
    # flowMC-EBM stacks, but not with 000 App. C.6's raw-energy regulariser (an image setting)
    assert runner_mod.may_stack(smoke_cells("flowmc_ebm", 1)[0])
    assert not runner_mod.may_stack(smoke_cells("flowmc_ebm", 1, energy_reg=0.1)[0])
    assert stackable(FlowMCEBM(problem, ToyMLP(2), smoke_cells("flowmc_ebm", 1)[0].algo))
    # NT-EBM stacks with 000's latent MALA, not with 001's HMC
    assert runner_mod.may_stack(smoke_cells("nt_ebm", 1)[0])
    assert not runner_mod.may_stack(smoke_cells("nt_ebm", 1, sampler="hmc")[0])
    assert stackable(NTEBM(problem, ToyMLP(2), smoke_cells("nt_ebm", 1)[0].algo))
    # CoopFlow stacks (its own flow draws, revision and step), not a subclass that draws its flow samples otherwise
    coop = smoke_cells("coopflow", 1)[0]
    assert runner_mod.may_stack(coop) and stackable(CoopFlow(problem, ToyMLP(2), coop.algo))
    assert not stackable(OwnDraws(problem, ToyMLP(2), coop.algo))


def test_the_sweep_stacks_the_missing_seeds_of_a_cell_and_resumes_per_seed(tmp_path, monkeypatch):
    cells = smoke_cells("ula_ebm", 3) + smoke_cells("cd", 2)
    assert [[c.seed for c in u] for u in units(cells, True)] == [[0, 1, 2], [0, 1]]
    # cells that do not stack stay units of their own (so that -j N runs them in parallel)
    nce = smoke_cells("nce_ebm", 2)
    assert [[(c.algorithm, c.seed) for c in u] for u in units(nce + cells[3:], True)] == [
        [("nce_ebm", 0)], [("nce_ebm", 1)], [("cd", 0), ("cd", 1)]]
    assert units(cells) == [[c] for c in cells]
    # a sweep stopped after it finished seed 1 of ula_ebm (a run of that seed alone) ...
    run_sweep([cells[1]], tmp_path / "a", jobs=1)
    before = ResultStore(tmp_path / "a").results()
    stacks = []
    real = runner_mod.run_stack
    monkeypatch.setattr(sweep_mod, "run_stack", lambda cs, **k: stacks.append([c.seed for c in cs]) or real(cs, **k))
    # ... resumed with --stack-seeds: only the missing seeds run, each cd / ula_ebm cell once
    run_sweep(cells[:3], tmp_path / "a", jobs=1, stack_seeds=True)
    assert stacks == [[0, 2]]
    after = ResultStore(tmp_path / "a").results()
    seed1 = before[before["seed"] == 1].sort_values("metric")
    kept = after[after["seed"] == 1].sort_values("metric")
    assert list(kept["finished_at"]) == list(seed1["finished_at"]) and list(kept["value"]) == list(seed1["value"])
    # every seed's values equal those of one stacked sweep of all three seeds
    run_sweep(cells[:3], tmp_path / "b", jobs=1, stack_seeds=True)
    full = ResultStore(tmp_path / "b").results()
    for s in (0, 1, 2):
        a = after[after["seed"] == s].set_index("metric")["value"]
        b = full[full["seed"] == s].set_index("metric")["value"]
        assert set(a.index) == set(b.index)
        assert a.sort_index().tolist() == pytest.approx(b.sort_index().tolist(), rel=RTOL, abs=ATOL, nan_ok=True)
    assert stacks == [[0, 2], [0, 1, 2]]
    assert len(ResultStore(tmp_path / "b").finished()) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("algorithm,algo", [("ula_ebm", {}), ("jarzynski", RESAMPLES), ("flowmc_ebm", FLOWMC),
                                            ("nt_ebm", NT), ("coopflow", COOP)])
def test_a_stack_on_cuda_gives_each_seed_its_run_alone(algorithm, algo):
    # Jarzynski resamples with uniforms from the CPU stream: each seed keeps a CPU generator of its own
    cells = smoke_cells(algorithm, 2, **algo)
    alone = [run_cell(c, device="cuda") for c in cells]
    for a, (_, s) in zip(alone, run_stack(cells, device="cuda"), strict=True):
        assert_same_run(a, s)
        assert s[0][0]["device"] == "cuda"
