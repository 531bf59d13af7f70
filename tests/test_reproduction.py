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
             "wall_time_s": 600.0, "cpu_time_s": 1200.0, "cell_id": f"{algorithm}-{target}-{s}", **extra}
            for s, v in enumerate(values)]


@pytest.fixture
def fixture_root(tmp_path):
    """One measured item (000 Table 1, flowMC-EBM, 3 seeds: 1, 2, 3 on 8 Gaussians and 0.5 x 3 on rings) and one
    not run yet (000 Table 2) with a saved projection."""
    docs = tmp_path / "docs" / "reproduction"
    docs.mkdir(parents=True)
    (docs / "a.toml").write_text('item = "000 Table 1"\ntitle = "log-density error"\norder = 1\n'
                                 'published = "table1_000"\nresults = ["results/reproduction/toy2d-paper"]\n'
                                 'verdict = "partly reproduced"\ndiagnosis = "Because of the rings."\n'
                                 '[plan]\nfile = "results/reproduction/plans/highdim-paper.csv"\n'
                                 'algorithms = ["flowmc_ebm"]\n')
    (docs / "b.toml").write_text('item = "000 Table 2"\ntitle = "R-hat"\norder = 2\npublished = "table2_000"\n'
                                 'results = ["results/reproduction/highdim-paper"]\n[plan]\n'
                                 'file = "results/reproduction/plans/highdim-paper.csv"\n'
                                 'algorithms = ["nt_ebm", "ula_ebm"]\n'
                                 'targets = ["hd_mixture16", "hd_mixture32", "hd_mixture64"]\n')
    run = tmp_path / "results" / "reproduction" / "toy2d-paper"
    run.mkdir(parents=True)
    rows = _rows("eight_gaussians", "flowmc_ebm", "logp_median_sq_error_grid", [1.0, 2.0, 3.0]) + \
        _rows("rings", "flowmc_ebm", "logp_median_sq_error_grid", [0.5, 0.5, 0.5]) + \
        _rows("eight_gaussians", "flowmc_ebm", "logp_median_sq_error", [0.1, 0.1, 0.1])
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    (run / "environment.json").write_text(json.dumps([{"cpu": "Test CPU", "cpu_count": 2, "gpu": None}]))
    (run / "RUN.md").write_text("python -m bench run ...\n")
    plans = tmp_path / "results" / "reproduction" / "plans"
    plans.mkdir()
    common = {"fidelity": "paper", "suite": "highdim", "threads": 1, "jobs": 2, "cpu": "Test CPU", "cpu_count": 2,
              "code_version": "def456", "peak_mem_bytes": 2**30, "load_before": 12.5, "load_after": 9.25}
    pd.DataFrame([{**common, "target": "hd_mixture16", "algorithm": "nt_ebm", "cells": 3, "cpu_s": 1200.0},
                  {**common, "target": "hd_mixture32", "algorithm": "ula_ebm", "cells": 3, "cpu_s": 2400.0},
                  {**common, "target": "hd_mixture32", "algorithm": "cd", "cells": 3, "cpu_s": 99999.0},
                  {**common, "suite": "toy2d", "target": "rings", "algorithm": "flowmc_ebm", "cells": 3,
                   "cpu_s": 2400.0}]
                 ).to_csv(plans / "highdim-paper.csv", index=False)
    return tmp_path


def test_page_from_known_numbers(fixture_root):
    page = build_page(fixture_root)
    # mean of 1, 2, 3 = 2; 95 % CI half-width t(0.975, 2) * 1 / sqrt(3) = 2.48; median 2 (0.5 on rings); published
    # 0.94 and 0.40 beside them
    # (000 gives one number per target: its values stand beside the grid median, the sample median has no
    # published column)
    assert ("| algorithm | 8 Gaussians, grid: published | 8 Gaussians, grid: measured | rings, grid: published "
            "| rings, grid: measured | 8 Gaussians, samples: measured | rings, samples: measured | settings "
            "| seeds |") in page
    assert "| flowmc_ebm | 0.94 | 2 ± 2.5 (med 2) | 0.4 | 0.5 ± 0 (med 0.5) | 0.1 ± 0 (med 0.1) |  | paper | 3 |" \
        in page
    assert "| ula_ebm | 1.86 |  | 5.39 |  |  |  |  |  |" in page  # published, not measured
    assert "| coopflow | 58.75 |  | 7.78 |" in page  # every published digit
    assert "**Verdict:** partly reproduced." in page and "Because of the rings." in page
    # cost: 6 runs of 600 s; where (environment.json), code, RUN.md
    assert "6 runs, 1 h of run time (training and evaluation of each run, summed; flow pre-training not included), " \
           "2 CPU-hours (setup included)" in page and "on Test CPU, 2 cores" in page and "code abc123" in page
    assert "[RUN.md](../results/reproduction/toy2d-paper/RUN.md)" in page
    # the projection made before the run, beside what it took: 3 x 2400 s = 2 CPU-hours
    assert "**Before the run,** `bench plan` projected cost: 3 cells, 2 CPU-hours, 1.3 h wall with -j 2" in page
    # not run yet: the projection of the two algorithms it needs (cd left out): (3 x 1200 + 3 x 2400) / 3600 = 3
    # CPU-hours; on 2 processes the six cells (1200 s x 3, 2400 s x 3) take 6000 s = 1.7 h
    assert "**Not run yet** (projected cost: 6 cells, 3 CPU-hours, 1.7 h wall with -j 2 on idle cores, peak memory " \
           "1 GiB per process (`bench plan` on Test CPU, 2 cores, timed at load average 9.25-12.5, code def456; " \
           "highdim-paper.csv); not in the projection: target hd_mixture64)" in page
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


def test_a_projection_in_two_files_adds_their_cells_and_says_how_each_was_timed(fixture_root):
    """000 Table 2's projection split over two `bench plan` files (d = 16 timed first, d = 32 / 64 later): the cells
    and CPU-hours add up, and each file's machine, load and code are named."""
    plans = fixture_root / "results" / "reproduction" / "plans"
    later = pd.read_csv(plans / "highdim-paper.csv").iloc[[1]].assign(target="hd_mixture64", cpu_s=3600.0,
                                                                       load_before=1.5, load_after=2.5,
                                                                       code_version="fed987")
    later.to_csv(plans / "highdim-later.csv", index=False)
    row = fixture_root / "docs" / "reproduction" / "b.toml"
    row.write_text(row.read_text().replace('file = "results/reproduction/plans/highdim-paper.csv"',
                                           'file = ["results/reproduction/plans/highdim-paper.csv", '
                                           '"results/reproduction/plans/highdim-later.csv"]'))
    page = build_page(fixture_root)
    # (3 x 1200 + 3 x 2400 + 3 x 3600) / 3600 = 6 CPU-hours; the nine cells started in order on 2 processes (each
    # on the first free one) end at 12,000 s = 3.3 h
    assert "**Not run yet** (projected cost: 9 cells, 6 CPU-hours, 3.3 h wall with -j 2 on idle cores, peak memory " \
           "1 GiB per process (`bench plan` on Test CPU, 2 cores, timed at load average 9.25-12.5, code def456; " \
           "highdim-paper.csv; and on Test CPU, 2 cores, timed at load average 1.5-2.5, code fed987; " \
           "highdim-later.csv))" in page
    assert "not in the projection" not in page.split("## 000 Table 2")[1]
    # a file named in the list that does not exist: no projection, and which file is missing
    row.write_text(row.read_text().replace("highdim-later.csv", "highdim-none.csv"))
    assert "no projection yet (results/reproduction/plans/highdim-none.csv does not exist" in build_page(fixture_root)


@pytest.mark.parametrize("text, match", [
    ('item = "x"\ntitle = "t"\npublished = "table1_000"\nverdict = "maybe"\n', "verdict must be one of"),
    ('item = "x"\ntitle = "t"\npublished = "table9_000"\n', "unknown published table or figure 'table9_000'"),
    ('item = "x"\ntitle = "t"\npublished = "table1_000"\ncolour = 1\n', "unknown key 'colour'"),
    ('item = "x"\ntitle = \n', "malformed row file"),
    ('item = "x"\ntitle = "t"\npublished = "table1_000"\n[plan]\nfile = 3\n', "'file' must be a CSV path or a list"),
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


DIAGNOSED = """number = 7
title = "flowMC-EBM on 8 Gaussians"
affects = ["000 Table 1"]
status = "diagnosed"
cause = ["our settings"]
observed = "At quick fidelity: too large."
diagnosis = "The paper's settings close the gap."
[[evidence]]
results = "results/reproduction/toy2d-paper"
metrics = ["logp_median_sq_error_grid", "diverged_at"]
algorithms = ["flowmc_ebm"]
targets = ["eight_gaussians", "two_mode"]
note = "paper settings, 3 seeds"
"""


def _disagreement(root, text, name="7-x.toml"):
    folder = root / "docs" / "reproduction" / "disagreements"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


@pytest.fixture
def with_diverged_run(fixture_root):
    """The fixture's folder plus one diverged flowMC-EBM run on two_mode (no table of the page shows two_mode)."""
    csv = fixture_root / "results" / "reproduction" / "toy2d-paper" / "results.csv"
    rows = pd.read_csv(csv)
    extra = _rows("two_mode", "flowmc_ebm", "diverged_at", [141.0])
    extra[0]["status"] = "diverged"
    pd.concat([rows, pd.DataFrame(extra)]).to_csv(csv, index=False)
    return fixture_root


def test_disagreement_cites_committed_results(with_diverged_run):
    _disagreement(with_diverged_run, DIAGNOSED)
    page = build_page(with_diverged_run)
    # listed with its status and cause, linked from the summary and from the item it affects
    assert "| [7. flowMC-EBM on 8 Gaussians](#7-flowmc-ebm-on-8-gaussians) | 000 Table 1 | diagnosed | our settings |" \
        in page
    assert "Known disagreements: [7. flowMC-EBM on 8 Gaussians](#7-flowmc-ebm-on-8-gaussians) (diagnosed)." in page
    summary = page.split("## Summary")[1].split("## ")[0]
    assert "| partly reproduced | paper fidelity | 7 (diagnosed) |" in summary
    assert "**Status:** diagnosed. **Cause:** our settings. **Affects:** 000 Table 1." in page
    assert "**Observed:** At quick fidelity: too large." in page and "The paper's settings close the gap." in page
    # the cited folder's numbers, read from it: mean of 1, 2, 3 = 2 ± 2.5 (t(0.975, 2) / sqrt(3)); the diverged run
    # counted under runs, with the step it stopped at (one seed: no CI)
    # the note, a phrase without a full stop, is ended before the table's caption begins its own sentence
    assert "Evidence: `results/reproduction/toy2d-paper` ([RUN.md](../results/reproduction/toy2d-paper/RUN.md)): " \
           "paper settings, 3 seeds. Mean ± 95 % CI over the seeds" in page
    assert "| eight_gaussians / flowmc_ebm (paper) | 3 ok | paper | abc123 | 2 ± 2.5 |  |" in page
    assert "| two_mode / flowmc_ebm (paper) | 1 diverged | paper | abc123 |  | 141 |" in page


def test_a_diverged_run_of_an_items_table_is_shown_not_left_blank(fixture_root):
    """A run that diverged has no value to average: its row must still say so on the page (it once showed a blank
    row, as if the algorithm had never run)."""
    csv = fixture_root / "results" / "reproduction" / "toy2d-paper" / "results.csv"
    extra = _rows("eight_gaussians", "nt_ebm", "diverged_at", [4423.0])
    extra[0]["status"] = "diverged"
    # cd: measured, but none of the table's metrics, and no published number (its blank row was once a KeyError)
    extra += _rows("rings", "cd", "kl", [9.0])
    pd.concat([pd.read_csv(csv), pd.DataFrame(extra)]).to_csv(csv, index=False)
    page = build_page(fixture_root)
    table = page.split("## 000 Table 1")[1].split("## ")[0]
    assert "| settings | seeds | failed runs |" in table
    assert "| nt_ebm | 0.97 |  | 0.62 |  |  |  |  |  | eight_gaussians: 1 diverged |" in table
    assert "| flowmc_ebm | 0.94 | 2 ± 2.5 (med 2) | 0.4 | 0.5 ± 0 (med 0.5) | 0.1 ± 0 (med 0.1) |  | paper | 3 |  |" \
        in table


def test_open_disagreement_needs_no_evidence(fixture_root):
    _disagreement(fixture_root, 'number = 1\ntitle = "t"\naffects = ["000 Table 2"]\nstatus = "open"\n')
    page = build_page(fixture_root)
    assert "**Status:** open. **Cause:** not separated yet. **Affects:** 000 Table 2." in page
    assert "*Not diagnosed yet.*" in page


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace('status = "diagnosed"', 'status = "solved"'), "status must be one of open, diagnosed, fixed"),
    (lambda t: t.split("[[evidence]]")[0], "status 'diagnosed' needs a cause and at least one [[evidence]]"),
    (lambda t: t.replace('cause = ["our settings"]', 'cause = ""'), "needs a cause"),
    (lambda t: t.replace('cause = ["our settings"]', 'cause = "bad luck"'), "cause must be one or a list of"),
    (lambda t: t.replace('status = "diagnosed"', 'status = "fixed"'), "status 'fixed' needs the cause 'our bug'"),
    (lambda t: t.replace('"000 Table 1"]', '"000 Table 9"]'), "affects unknown item '000 Table 9'"),
    (lambda t: t.replace('results = "results/reproduction/toy2d-paper"', 'results = "/tmp/mine"'),
     "evidence must cite a committed result folder under results/reproduction/"),
    (lambda t: t.replace("toy2d-paper", "gmm50d-paper"), "evidence results/reproduction/gmm50d-paper: no results.csv"),
    (lambda t: t.replace('"diverged_at"]', '"kl"]'), "no rows of metric 'kl' in the cited cells"),
    (lambda t: t.replace('"two_mode"]', '"rings", "moons"]'), "no runs of target 'moons'"),
    (lambda t: t.replace("number = 7", "number = 0"), "'number' must be a positive integer"),
    (lambda t: t + "owner = 'me'\n", "unknown key 'owner'"),
])
def test_bad_disagreement_files_are_one_line_errors(with_diverged_run, capsys, edit, match):
    path = _disagreement(with_diverged_run, edit(DIAGNOSED))
    assert main(["reproduction", "--root", str(with_diverged_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and path.name in err[0], err
    assert not (with_diverged_run / "docs" / "reproduction.md").exists()


def test_cited_folder_needs_its_run_md(with_diverged_run, capsys):
    (with_diverged_run / "results" / "reproduction" / "toy2d-paper" / "RUN.md").unlink()
    _disagreement(with_diverged_run, DIAGNOSED)
    assert main(["reproduction", "--root", str(with_diverged_run)]) == 2
    assert "evidence results/reproduction/toy2d-paper: no RUN.md" in capsys.readouterr().err


def test_disagreement_numbers_are_unique(with_diverged_run, capsys):
    _disagreement(with_diverged_run, DIAGNOSED, "7-a.toml")
    _disagreement(with_diverged_run, DIAGNOSED, "7-b.toml")
    assert main(["reproduction", "--root", str(with_diverged_run)]) == 2
    assert "7-b.toml: number 7 is also 7-a.toml's" in capsys.readouterr().err


def test_a_verdict_cites_committed_results(fixture_root, capsys):
    row = fixture_root / "docs" / "reproduction" / "b.toml"
    row.write_text(row.read_text().replace('[plan]', 'verdict = "reproduced"\n[plan]'))
    assert main(["reproduction", "--root", str(fixture_root)]) == 2
    err = capsys.readouterr().err
    assert "b.toml: verdict 'reproduced' cites no committed results" in err
