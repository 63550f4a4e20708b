"""The README's measured numbers are rendered from the committed JSON, never typed by hand."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_match_the_json():
    r = subprocess.run([sys.executable, "-m", "benchmarks.readme_results", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_names_the_two_setup_commands_and_ci_calls_one():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_quickstart_runs_as_written():
    """The README's Python quickstart, executed: its calls follow the API it describes."""
    import re

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("(2000, 2)", "(200, 2)")  # the same calls, fewer samples
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
