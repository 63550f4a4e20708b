"""The benchmarks' shared pieces, on the CPU: a failing stage is recorded and the run goes on; a stage that
does not fit the budget is skipped and says so; the summary reads pytest's counts; the CLI refuses bad input."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import common
from benchmarks.summarize import pytest_counts

ROOT = Path(__file__).resolve().parents[1]


def test_record_keeps_measurements_and_errors(tmp_path):
    rec = common.Record("r.json", {"a": 1}, budget=60, directory=tmp_path)
    with rec.stage("good") as ok:
        if ok:
            rec["x"] = 3.0
    with rec.stage("bad") as ok:
        if ok:
            raise RuntimeError("boom")
    ran = []
    with rec.stage("late", need=1e9) as ok:
        if ok:
            ran.append(1)
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["x"] == 3.0 and d["config"] == {"a": 1} and not ran
    assert "RuntimeError: boom" in d["errors"]["bad"] and d["errors"]["late"].startswith("skipped")
    assert "good" not in d["errors"] and {"torch", "commit", "device"} <= set(d["env"])


def test_pytest_counts():
    assert pytest_counts("x\n2 failed, 18 passed, 1 warning in 10.97s\n") == {"failed": 2, "passed": 18}
    assert pytest_counts("6 passed, 1 warning, 14 errors in 8.23s") == {"passed": 6, "errors": 14}
    assert pytest_counts("nothing here") == {}


def test_gpu_train_refuses_bad_recipes_in_one_line():
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_train", "--quick", "--recipes", "turbo"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--recipes must be among" in r.stderr and "Traceback" not in r.stderr
