"""The README's two fresh-machine commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks if b.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    run_cmd, test_cmd = readme_commands()[:2]
    assert "bench run --suite toy2d --fidelity quick" in run_cmd
    assert test_cmd.endswith("python -m pytest")
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines


def test_install_is_pinned():
    for cmd in readme_commands()[:2]:
        assert "-c constraints.txt" in cmd
    pins = (ROOT / "constraints.txt").read_text()
    # the pair torch-fidelity imports cleanly with, and torch-fidelity itself (FID, KID, IS)
    for pin in (r"torch==2\.14\.1", r"torchvision==0\.29\.1", r"torch-fidelity==0\.4\.0"):
        assert re.search(rf"^{pin}$", pins, re.M), pin
