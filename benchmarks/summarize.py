"""Build ``benchmarks/results/summary.json`` from whatever the scripts wrote (CPU, seconds).

    python -m benchmarks.summarize

Reads every ``*.json`` under ``benchmarks/results/`` (one current file per script; history is in git) and every
``*_log.txt`` that holds a pytest run, with no list of file names: for each file its environment record (card,
torch, commit, time: :func:`benchmarks.common.environment`) and the ``summary`` the script computed, if any; for each
test log pytest's counts. Nothing here is typed by hand.
"""

from __future__ import annotations

import json
import re
import sys

from .common import RESULTS, write_json

ENV_KEYS = ("device", "device_name", "torch", "diffusers", "commit", "time_utc", "cpu_count", "torch_threads")


def pytest_counts(text: str) -> dict:
    """``{"passed": n, "failed": m, ...}`` from pytest's last summary line."""
    last = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", last[-1])} if last else {}


def environment_of(d: dict) -> dict:
    """The environment record of one result file, wherever the script keeps it."""
    env = next((d[k] for k in ("env", "environment", "machine") if isinstance(d.get(k), dict)), d)
    return {k: env[k] for k in ENV_KEYS if k in env}


def main() -> dict:
    files, logs = {}, {}
    for path in sorted(RESULTS.glob("*.json")):
        if path.name == "summary.json":
            continue
        d = json.loads(path.read_text())
        files[path.stem] = {"file": path.name, "env": environment_of(d), "summary": d.get("summary"),
                            "errors": sorted(d.get("errors", {})) if isinstance(d.get("errors"), dict) else []}
    for path in sorted(RESULTS.glob("*_log.txt")):
        counts = pytest_counts(path.read_text())
        if counts:
            logs[path.stem] = counts
    out = {"files": files, "test_logs": logs}
    write_json(RESULTS / "summary.json", out)
    return out


if __name__ == "__main__":
    s = main()
    print(json.dumps({k: list(v) for k, v in s.items()}, indent=1))
    sys.exit(0)
