"""The data behind the figures: one curve per (target, algorithm), its band over seeds only; improper models
found for marking; figures drawn from hand-made traces carry their title."""

import pandas as pd
import pytest

from bench import figures, plots


def traces(values):
    """values: {(target, algorithm): [[value per iteration] per seed]} -> long-format traces."""
    rows = []
    for (target, algorithm), seeds in values.items():
        for seed, curve in enumerate(seeds):
            for it, v in enumerate(curve, start=1):
                rows.append({"suite": "toy2d", "fidelity": "quick", "target": target, "algorithm": algorithm,
                             "seed": seed, "iteration": it * 10, "grad_evals": it * 100, "metric": "ebm_weight[0]",
                             "value": v})
    return pd.DataFrame(rows)


TR = traces({("two_mode", "a"): [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
             ("four_mode", "a"): [[0.9, 0.9], [0.7, 0.7], [0.8, 0.8]],
             ("four_mode", "b"): [[0.0, 1.0]]})


def test_curve_frame_is_one_line_per_target_and_algorithm_banded_over_seeds():
    f = figures.curve_frame(TR)
    lines = sorted(set(zip(f["target"], f["algorithm"], strict=True)))
    assert lines == [("four_mode", "a"), ("four_mode", "b"), ("two_mode", "a")]
    two = f.set_index(["target", "algorithm", "iteration"]).loc[("two_mode", "a")]
    assert two.loc[10, "mean"] == pytest.approx(0.3) and (two.loc[10, "lo"], two.loc[10, "hi"]) == (0.1, 0.5)
    assert two.loc[20, "n_seeds"] == 3
    four = f.set_index(["target", "algorithm", "iteration"]).loc[("four_mode", "a")]
    assert four.loc[10, "mean"] == pytest.approx(0.8) and (four.loc[10, "lo"], four.loc[10, "hi"]) == (0.7, 0.9)
    by_work = figures.curve_frame(TR, x="grad_evals")
    assert set(by_work["grad_evals"]) == {100, 200} and len(by_work) == len(f)


def test_improper_cells_are_found_and_absent_metric_is_fine():
    res = pd.DataFrame([{"suite": "toy2d", "fidelity": "quick", "target": "two_mode", "algorithm": a, "seed": s,
                         "metric": "improper", "value": v, "status": "ok"}
                        for a, vals in (("a", [0, 1, 1]), ("b", [0, 0, 0])) for s, v in enumerate(vals)])
    assert figures.improper_cells(res) == {("two_mode", "a"): "2/3"}
    assert figures.improper_cells(res[res["metric"] != "improper"]) == {}


def test_figures_from_hand_made_traces(tmp_path):
    for draw, name in ((plots.training_curves, "c.png"), (plots.weights_over_training, "w.png")):
        out = draw(TR, tmp_path / name)
        assert out == tmp_path / name and out.stat().st_size > 1000
    assert plots.training_curves(TR[TR["metric"] == "nothing"], tmp_path / "none.png") is None


def test_rhat_figure_gets_a_chain_mode_stay_row_where_the_traces_hold_it(tmp_path, monkeypatch):
    """000 Fig. 6's R-hat panels, and under them chain_mode_stay on the same chains when traced (the panel that
    says whether a large R-hat is trapping): its lines carry the traced values; without it, one row."""
    from bench import plots_highdim

    drawn = []
    monkeypatch.setattr(plots_highdim, "save", lambda fig, path: drawn.append(fig))
    rows = [{"suite": "highdim", "fidelity": "quick", "target": "hd_mixture16", "algorithm": a, "seed": 0,
             "iteration": it, "metric": m, "value": v}
            for a, rhat, stay in (("flowmc_ebm", 1.02, 0.4), ("ula_ebm", 8.0, 1.0)) for it in (100, 200)
            for m, v in (("max_rhat", rhat), ("chain_mode_stay", stay))]
    tr = pd.DataFrame(rows)
    plots_highdim.rhat_over_training(tr, tmp_path / "r.png")
    axes = drawn[-1].axes
    assert len(axes) == 2 and axes[1].get_ylabel().startswith("chain_mode_stay")
    assert sorted(sorted(line.get_ydata().tolist()) for line in axes[1].get_lines()
                  if len(line.get_xdata()) == 2 and list(line.get_xdata()) == [100, 200]) == [[0.4, 0.4], [1.0, 1.0]]
    plots_highdim.rhat_over_training(tr[tr["metric"] == "max_rhat"], tmp_path / "r1.png")
    assert len(drawn[-1].axes) == 1
