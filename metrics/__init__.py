"""Metrics: pure functions of samples, densities and chains, each tested against a known answer."""

from bench._ownpkg import ensure_own_datasets

ensure_own_datasets()
