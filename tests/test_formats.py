"""Results other tools read: Parquet beside the CSV (same rows, typed columns, a schema version) and the
environment record of a results folder."""

import json

import pandas as pd
import pyarrow.parquet as pq
import torch

import bench
from bench.formats import SCHEMA_VERSION, schema_version


def test_parquet_holds_the_csv_rows_with_a_schema_version_and_the_environment_is_recorded(tmp_path):
    out = tmp_path / "r"
    bench.run("toy2d", fidelity="smoke", algorithms=["cd"], targets=["two_mode", "rings"], out=out, jobs=1)
    for name in ("results", "traces"):
        csv = pd.read_csv(out / f"{name}.csv")
        par = pd.read_parquet(out / f"{name}.parquet")
        assert schema_version(out / f"{name}.parquet") == SCHEMA_VERSION == "1"
        assert list(par.columns) == list(csv.columns)
        assert len(par) == len(csv) and csv["target"].nunique() == 2  # both cells, not only the first one
        key = ["target", "seed", "metric", *(["iteration"] if name == "traces" else [])]
        a, b = (d.sort_values(key).reset_index(drop=True) for d in (csv, par))
        pd.testing.assert_series_equal(a["value"], b["value"], check_dtype=False)
        assert (a["metric"] == b["metric"]).all()
    types = {f.name: str(f.type) for f in pq.read_schema(out / "results.parquet")}
    assert types["value"] == "double" and types["seed"] == "int64" and types["grad_evals"] == "int64"
    assert types["reason"] == "string" and types["config"] == "string" and types["metric"] == "string"

    (env,) = json.loads((out / "environment.json").read_text())
    assert env["torch"]["version"] == torch.__version__ and env["device"] == "cpu"
    assert env["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"pyarrow", "pandas", "numpy"} <= set(env["packages"]) and env["cpu"] and env["cpu_count"] >= 1
    # a resumed sweep in the same environment adds no second record
    bench.run("toy2d", fidelity="smoke", algorithms=["cd"], targets=["two_mode"], out=out, jobs=1, force=True)
    assert len(json.loads((out / "environment.json").read_text())) == 1
