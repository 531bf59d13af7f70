"""The labelling rule of suite cells (bench/suite.py ``settings_label``): "paper" only where every training setting
and network is the paper's; "paper, with deviations" with the list of what deviates; the rule holds in every suite
file and is enforced when a suite is resolved, before anything runs. The tests check the rule, not the labels."""

import bench  # noqa: F401  (binds our own `datasets` package first)

# isort: split
import pytest

import algorithms
import datasets
from bench import suite as S
from bench.errors import BenchError

SUITES = ["toy2d", "highdim", "gmm50d", "digits", "cifar10", "selfadv2d"]


def test_the_rule_on_known_cases():
    where = "s.toml [fidelity.paper] a/t"
    assert S.settings_label(where, "paper", [], []) == []
    with pytest.raises(BenchError, match="settings = 'paper' but the cell deviates from the paper \\(ours\\)"):
        S.settings_label(where, "paper", ["ours"], [])
    with pytest.raises(BenchError, match="deviates from the paper \\(energy e: a stand-in\\)"):
        S.settings_label(where, "paper", [], ["energy e: a stand-in"])
    with pytest.raises(BenchError, match="needs the list of what deviates"):
        S.settings_label(where, "paper, with deviations", [], [])
    with pytest.raises(BenchError, match="needs the list of what deviates"):  # a stand-in alone is no list
        S.settings_label(where, "paper, with deviations", [], ["energy e: a stand-in"])
    with pytest.raises(BenchError, match="deviations are listed only for"):
        S.settings_label(where, "extrapolated", ["ours"], [])
    with pytest.raises(BenchError, match="list of non-empty strings"):
        S.settings_label(where, "paper, with deviations", "ours", [])
    # the stand-in networks join the declared list, once
    assert S.settings_label(where, "paper, with deviations", ["ours", "flow: x"], ["flow: x", "energy e: y"]) == \
        ["ours", "flow: x", "energy e: y"]
    assert S.settings_label(where, "quick", [], ["energy e: y"]) == []


def _suite(tmp_path, monkeypatch, text: str) -> dict:
    monkeypatch.setattr(S, "SUITES_DIR", tmp_path)
    (tmp_path / "s.toml").write_text(text)
    return S.load_suite("s")


def test_a_stand_in_energy_labelled_paper_is_refused_at_load(tmp_path, monkeypatch):
    """003's CNN as we read it (003 gives no layer list) is a stand-in (algorithms/conv_energies.py): a cell with it
    cannot claim "paper"."""
    head = 'targets = ["digits8"]\nalgorithms = ["noise_free_euler"]\n[fidelity.paper.defaults]\nn_iters = 3\n'
    s = _suite(tmp_path, monkeypatch, head + 'energy = "conv003_small"\nsettings = "paper"\n')
    with pytest.raises(BenchError, match="energy conv003_small: .*label it settings = 'paper, with deviations'"):
        S.resolve_cells(s, "paper")
    s = _suite(tmp_path, monkeypatch, head + 'energy = "conv003_small"\nsettings = "paper, with deviations"\n'
               'deviations = ["n_iters = 3"]\n')
    cell = S.resolve_cells(s, "paper", seeds=1)[0]
    assert cell.deviations[0] == "n_iters = 3" and cell.deviations[1].startswith("energy conv003_small: ")
    # the paper's own network at the paper's settings may be "paper"
    s = _suite(tmp_path, monkeypatch, head + 'energy = "convnet_lipswish"\nsettings = "paper"\n')
    assert S.resolve_cells(s, "paper", seeds=1)[0].deviations == []


def test_a_stand_in_flow_labelled_paper_is_refused_at_load(tmp_path, monkeypatch):
    """CoopFlow's image flow stands in for Flow++: "paper" is refused on an image target, not on a 2-D one."""
    text = ('targets = ["{t}"]\nalgorithms = ["coopflow"]\n[fidelity.paper.defaults]\nn_iters = 3\n'
            'energy = "{e}"\nsettings = "paper"\nflow_layers = 1\nflow_hidden = 4\n')
    s = _suite(tmp_path, monkeypatch, text.format(t="digits8", e="resnet_ebm"))
    with pytest.raises(BenchError, match="flow: a Glow-style multiscale flow .* Flow\\+\\+"):
        S.resolve_cells(s, "paper")
    s = _suite(tmp_path, monkeypatch, text.format(t="two_mode", e="toy_mlp"))
    assert S.resolve_cells(s, "paper", seeds=1)[0].settings == "paper"


@pytest.mark.parametrize("name", SUITES)
def test_every_suite_file_follows_the_rule(name, monkeypatch):
    """Every cell of every fidelity: "paper" with no stand-in network and no deviation; "paper, with deviations" with
    a declared list that includes each stand-in network; no other label carries a list. (Data files are not read.)"""
    monkeypatch.setattr(S, "dry_run", lambda *a, **k: None)
    suite = S.load_suite(name)
    variants = S._variants(suite)
    for fidelity in suite["fidelity"]:
        for c in S.resolve_cells(suite, fidelity, suite["algorithms"], suite["targets"], seeds=1):
            cls = algorithms.ALGORITHMS[variants.get(c.algorithm, (c.algorithm,))[0]]
            networks = S.stand_ins(cls, c.algo, c.train, datasets.get_target(c.target))
            where = f"{name} {fidelity} {c.algorithm}/{c.target}"
            if c.settings == "paper":
                assert not networks and not c.deviations, where
            elif c.settings == S.PAPER_WITH_DEVIATIONS:
                assert len(c.deviations) > len(networks) and set(networks) <= set(c.deviations), where
            else:
                assert c.deviations == [], where


def test_the_tables_know_the_label():
    from bench import tables

    assert tables.PAPER_WITH_DEVIATIONS == S.PAPER_WITH_DEVIATIONS
