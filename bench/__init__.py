"""ebm-bench harness: CLI, suites as data, runner, result store, tables and plots."""

from bench._ownpkg import ensure_own_datasets

ensure_own_datasets()
