"""The benchmark harness works (a smoke test: no timing assertions)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run  # noqa: E402


def test_quick_run_writes_json_and_markdown(tmp_path):
    result = run.main(["--quick", "--device", "cpu", "--workloads", "seed002", "jacobian", "--repeats", "2", "--no-jax",
                       "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results-cpu-quick.json").read_text())
    assert saved["rows"] == result["rows"]
    contenders = {(r["workload"], r["contender"]) for r in saved["rows"]}
    for w in ("seed002", "jacobian"):
        for c in ("seed autograd", "ours eager", "ours compiled"):
            assert (w, c) in contenders
    assert all(r["median_ms"] > 0 and r["notes"] == [] for r in saved["rows"])
    table = (tmp_path / "results-cpu-quick.md").read_text()
    assert "| seed002 | ours compiled |" in table and "first-call compile" in table
    assert all(t["met"] is None for t in saved["targets"]) and "not graded" in table  # quick: never graded
