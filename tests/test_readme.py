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
