"""`import datasets` must give this suite's package, even when another `datasets` comes first on the path."""

import bench  # noqa: F401  (binds our own `datasets` package before anything else can)

# isort: split
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import datasets

ROOT = Path(bench.__file__).resolve().parent.parent
OWN_INIT = (ROOT / "datasets" / "__init__.py").resolve()


@pytest.fixture
def fake_first(tmp_path):
    """An environment whose PYTHONPATH starts with a directory holding a fake top-level `datasets`
    (standing in for Hugging Face's), then this checkout; run from a directory that is neither."""
    fake = tmp_path / "fake"
    (fake / "datasets").mkdir(parents=True)
    (fake / "datasets" / "__init__.py").write_text("FAKE = True\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fake), str(ROOT)])
    env.pop("PYTHONSTARTUP", None)
    return fake, cwd, env


def _run(code: str, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_this_process_has_our_datasets():
    assert Path(datasets.__file__).resolve() == OWN_INIT
    assert hasattr(datasets, "TARGETS") and not hasattr(datasets, "FAKE")


def test_fake_datasets_shadows_without_bench(fake_first):
    """Control: without importing bench first, the fake package wins (so the next test means something)."""
    fake, cwd, env = fake_first
    out = _run("import datasets; print(datasets.__file__)", cwd, env)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == (fake / "datasets" / "__init__.py").resolve()


def test_importing_bench_first_binds_our_datasets(fake_first):
    fake, cwd, env = fake_first
    code = """
        import bench, datasets
        import metrics.modes
        print(datasets.__file__)
        print(hasattr(datasets, "FAKE"), "two_mode" in datasets.TARGETS)
    """
    out = _run(code, cwd, env)
    assert out.returncode == 0, out.stderr
    path, flags = out.stdout.strip().splitlines()
    assert Path(path).resolve() == OWN_INIT
    assert flags == "False True"


def test_importing_another_datasets_before_bench_is_an_import_error(fake_first):
    fake, cwd, env = fake_first
    code = """
        import datasets
        assert datasets.FAKE
        try:
            import bench
        except ImportError as e:
            print("IMPORTERROR:", e)
        else:
            print("NO ERROR")
    """
    out = _run(code, cwd, env)
    assert out.returncode == 0, out.stderr
    msg = out.stdout.strip()
    assert msg.startswith("IMPORTERROR:"), msg
    assert "datasets" in msg
    assert str(fake / "datasets") in msg  # says which package got in the way
    assert "import bench" in msg  # and what to do about it
