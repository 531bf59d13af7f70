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
