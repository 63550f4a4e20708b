"""Child process of the grader: execute one prepared notebook in a fresh kernel and stream what each
cell did to a JSON-lines file, so that a notebook killed at its time limit still leaves its results.

    python -m coursework._run NOTEBOOK RESULTS_JSONL WORKDIR CELL_TIMEOUT OUTPUT_LIMIT
"""

from __future__ import annotations

import json
import signal
import sys

import nbformat
from nbclient import NotebookClient


def _summary(cell, output_limit: int) -> dict:
    text, size, error = [], 0, None
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            s = o.get("text", "")
            s = "".join(s) if isinstance(s, list) else s
            size += len(s)
            text.append(s)
        elif o.get("output_type") == "error":
            error = {"ename": o.get("ename", ""), "evalue": o.get("evalue", "")}
        else:
            size += sum(len(str(v)) for v in o.get("data", {}).values())
    joined = "".join(text)
    return {
        "stdout": joined[-4000:],
        "output_bytes": size,
        "over_limit": size > output_limit,
        "error": error,
    }


def main() -> int:
    nb_path, results, workdir, cell_timeout, output_limit = sys.argv[1:6]
    cell_timeout, output_limit = int(cell_timeout), int(output_limit)
    nb = nbformat.read(nb_path, as_version=4)
    sink = open(results, "a", buffering=1)

    def executed(cell, cell_index, execute_reply=None, **_):
        row = {"cell": cell_index, **_summary(cell, output_limit)}
        if row["over_limit"]:
            cell["outputs"] = []  # keep the grader's memory bounded
        sink.write(json.dumps(row) + "\n")

    def started(**_):
        try:
            pid = client.km.provisioner.process.pid
        except AttributeError:
            pid = None
        sink.write(json.dumps({"kernel_pid": pid}) + "\n")

    client = NotebookClient(
        nb,
        timeout=cell_timeout,
        interrupt_on_timeout=True,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": workdir}},
        on_cell_executed=executed,
        on_notebook_start=started,
    )

    def stop(signum, frame):
        try:
            if client.km is not None:
                client.km.shutdown_kernel(now=True)
        finally:
            sys.exit(3)

    signal.signal(signal.SIGTERM, stop)
    try:
        client.execute()
    except Exception as e:  # a dead kernel or similar: the parent reports the cells not reached
        sink.write(json.dumps({"fatal": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}) + "\n")
        return 1
    sink.write(json.dumps({"done": True}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
