"""One registry: the suite's own algorithms, targets and energies enter through the same ``register`` (the same
checks) as plug-ins, and the tables the rest of the suite reads hold exactly what was registered."""

import pytest

import algorithms
import datasets
from algorithms import energies
from bench import registry
from bench.errors import BenchError
from datasets.base import GaussianMixture


def test_the_tables_hold_exactly_the_registered_built_ins_with_their_origin():
    for kind, entries in registry.built_ins().items():
        table = registry.table(kind)
        assert {n: table[n] for n in entries} == entries
        assert all(registry.ORIGINS[(kind, n)] == registry.BUILT_IN for n in entries)
    assert registry.table("algorithms") is algorithms.ALGORITHMS
    assert registry.table("targets") is datasets.TARGETS and registry.table("energies") is energies.ENERGIES
    assert len(algorithms.ALGORITHMS) == len(algorithms.BUILT_IN) == 13


class Lopsided(GaussianMixture):
    name = "lopsided"

    def __init__(self):
        super().__init__(means=[[0.0, 0.0], [1.0, 1.0]], stds=0.5, weights=[0.5, 0.5])

    @property
    def mode_weights(self):  # does not sum to 1
        return super().mode_weights * 2


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.setattr(datasets, "TARGETS", dict(datasets.TARGETS))
    monkeypatch.setattr(registry, "ORIGINS", dict(registry.ORIGINS))


def test_a_built_in_is_checked_as_a_plug_in_is(clean):
    """The same check refuses a faulty class whichever door it is named at: there is only one."""
    messages = []
    for source in (registry.BUILT_IN, "my_file.py (my:Lopsided)"):
        with pytest.raises(BenchError, match="mode_weights must be 2 weights summing to 1") as e:
            registry.register("targets", "lopsided", Lopsided, source, f"{source} lopsided")
        messages.append(str(e.value).split(": ", 1)[1])
    assert messages[0] == messages[1]
    assert "lopsided" not in datasets.TARGETS


def test_registering_the_same_class_again_is_a_no_op_and_another_under_a_taken_name_is_refused(clean):
    registry.register_built_ins()  # again: nothing changes
    assert registry.origin("targets", "two_mode") == registry.BUILT_IN
    with pytest.raises(BenchError, match="target 'two_mode' is already registered \\(built-in\\)"):
        registry.register("targets", "two_mode", datasets.TARGETS["four_mode"], "x", "here")
