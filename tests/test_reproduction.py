"""docs/reproduction.md is generated: from a hand-made folder of known numbers the page shows the known means, CIs,
published values, verdict and cost; the committed page is what the committed files give."""

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.reproduction import build_page

ROOT = Path(__file__).resolve().parent.parent


def _rows(target, algorithm, metric, values, **extra):
    return [{"suite": "toy2d", "target": target, "algorithm": algorithm, "fidelity": "paper", "seed": s,
             "metric": metric, "value": v, "status": "ok", "settings": "paper", "code_version": "abc123",
             "wall_time_s": 600.0, "cell_id": f"{algorithm}-{target}-{s}", **extra} for s, v in enumerate(values)]


@pytest.fixture
def fixture_root(tmp_path):
    """One measured item (000 Table 1, flowMC-EBM, 3 seeds: 1, 2, 3 on 8 Gaussians and 0.5 x 3 on rings) and one
    not run yet (000 Table 2) with a saved projection."""
    docs = tmp_path / "docs" / "reproduction"
    docs.mkdir(parents=True)
    (docs / "a.toml").write_text('item = "000 Table 1"\ntitle = "log-density error"\norder = 1\n'
                                 'published = "table1_000"\nresults = ["results/reproduction/toy2d-paper"]\n'
                                 'verdict = "partly reproduced"\ndiagnosis = "Because of the rings."\n')
    (docs / "b.toml").write_text('item = "000 Table 2"\ntitle = "R-hat"\norder = 2\npublished = "table2_000"\n'
                                 'results = ["results/reproduction/highdim-paper"]\n[plan]\n'
                                 'file = "results/reproduction/plans/highdim-paper.csv"\n'
                                 'algorithms = ["nt_ebm", "ula_ebm"]\n')
    run = tmp_path / "results" / "reproduction" / "toy2d-paper"
    run.mkdir(parents=True)
    rows = _rows("eight_gaussians", "flowmc_ebm", "logp_median_sq_error", [1.0, 2.0, 3.0]) + \
        _rows("rings", "flowmc_ebm", "logp_median_sq_error", [0.5, 0.5, 0.5])
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "environment.json").write_text(json.dumps([{"cpu": "Test CPU", "cpu_count": 2, "gpu": None}]))
    (run / "RUN.md").write_text("python -m bench run ...\n")
    plans = tmp_path / "results" / "reproduction" / "plans"
    plans.mkdir()
    common = {"fidelity": "paper", "suite": "highdim", "threads": 1, "jobs": 2, "cpu": "Test CPU", "cpu_count": 2,
              "code_version": "def456", "peak_mem_bytes": 2**30}
    pd.DataFrame([{**common, "target": "hd_mixture16", "algorithm": "nt_ebm", "cells": 3, "cpu_s": 1200.0},
                  {**common, "target": "hd_mixture32", "algorithm": "ula_ebm", "cells": 3, "cpu_s": 2400.0},
                  {**common, "target": "hd_mixture32", "algorithm": "cd", "cells": 3, "cpu_s": 99999.0}]
                 ).to_csv(plans / "highdim-paper.csv", index=False)
    return tmp_path


def test_page_from_known_numbers(fixture_root):
    page = build_page(fixture_root)
    # mean of 1, 2, 3 = 2; 95 % CI half-width t(0.975, 2) * 1 / sqrt(3) = 2.48; published 0.94 and 0.40 beside them
    assert ("| algorithm | eight_gaussians: published | eight_gaussians: measured | rings: published "
            "| rings: measured | settings | seeds |") in page
    assert "| flowmc_ebm | 0.94 | 2 ± 2.5 | 0.4 | 0.5 ± 0 | paper | 3 |" in page
    assert "| ula_ebm | 1.86 |  | 5.39 |  |  |  |" in page  # published, not measured
    assert "| coopflow | 58.75 |  | 7.78 |" in page  # every published digit
    assert "**Verdict:** partly reproduced." in page and "Because of the rings." in page
    # cost: 6 runs of 600 s; where (environment.json), code, RUN.md
    assert "6 runs, 1 h of run time" in page and "on Test CPU, 2 cores" in page and "code abc123" in page
    assert "[RUN.md](../results/reproduction/toy2d-paper/RUN.md)" in page
    # not run yet: the projection of the two algorithms it needs (cd left out): (3 x 1200 + 3 x 2400) / 3600 = 3
    # CPU-hours; on 2 processes the six cells (1200 s x 3, 2400 s x 3) take 6000 s = 1.7 h
    assert "**Not run yet** (projected cost: 6 cells, 3 CPU-hours, 1.7 h wall with -j 2 on idle cores, peak memory " \
           "1 GiB per process (`bench plan` on Test CPU, 2 cores, code def456" in page
    assert "| 000 Table 2 | ula_ebm | 7.3 |" not in page and "| ula_ebm | 7.3 | 9.29 | 90.9 |" in page
    summary = page.split("## Summary")[1].split("## ")[0]
    assert "| partly reproduced | paper fidelity |" in summary and "| not run yet |  |" in summary


def test_cli_writes_and_checks(fixture_root, capsys):
    out = fixture_root / "docs" / "reproduction.md"
    assert main(["reproduction", "--root", str(fixture_root), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["reproduction", "--root", str(fixture_root)]) == 0
    assert out.read_text() == build_page(fixture_root)
    assert main(["reproduction", "--root", str(fixture_root), "--check"]) == 0


@pytest.mark.parametrize("text, match", [
    ('item = "x"\ntitle = "t"\npublished = "table1_000"\nverdict = "maybe"\n', "verdict must be one of"),
    ('item = "x"\ntitle = "t"\npublished = "table9_000"\n', "unknown published table or figure 'table9_000'"),
    ('item = "x"\ntitle = "t"\npublished = "table1_000"\ncolour = 1\n', "unknown key 'colour'"),
    ('item = "x"\ntitle = \n', "malformed row file"),
])
def test_bad_row_files_are_one_line_errors(tmp_path, capsys, text, match):
    (tmp_path / "docs" / "reproduction").mkdir(parents=True)
    (tmp_path / "docs" / "reproduction" / "x.toml").write_text(text)
    assert main(["reproduction", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "x.toml" in err[0]
    assert not (tmp_path / "docs" / "reproduction.md").exists()


def test_committed_page_is_up_to_date():
    """docs/reproduction.md is exactly what the committed row files, result folders and published numbers give:
    regenerate it with `python -m bench reproduction` after changing any of them."""
    assert (ROOT / "docs" / "reproduction.md").read_text() == build_page(ROOT)
