"""Shared pytest set-up.

- Hypothesis: under CI (the environment variable ``CI`` set, as ``.ci/run`` does) it runs
  derandomized, so a green run is repeatable; locally it keeps drawing fresh examples.
- Threads: every test runs with ``DDPM_TEST_THREADS`` torch threads (default: at most 2, the CI
  machine's cores; 1 in each process of pytest-xdist, which runs as many processes as cores), set by
  one fixture and restored after the test, instead of module-level ``torch.set_num_threads`` calls
  that leak into every later module. A module or test that wants another count says
  ``pytest.mark.threads(n)``; whatever a test (or the CLI it runs) sets is undone.
- ``slow``: the tests that need the built book, a browser, the coursework editions, several processes
  or a notebook kernel (``SLOW_MODULES``) are marked ``slow``; ``make test-fast`` runs the others
  (``-m "not slow"``), the package's unit tests, in about a minute.
- Order: the slowest modules first, so that pytest-xdist's processes finish together.
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

_DEFAULT_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads()))
TEST_THREADS = int(os.environ.get("DDPM_TEST_THREADS", _DEFAULT_THREADS))

# Modules that need more than the package: the built site and a browser, the coursework editions and
# the grader, the chapters' claim cells, torchrun or killed processes, notebook kernels, the CLI in
# subprocesses. Slowest first.
SLOW_MODULES = ["test_site", "test_coursework", "test_coursework_book", "test_book", "test_distributed",
                "test_nbval_cache", "test_checkpoint", "test_cli_hostile", "test_cli_edges", "test_cli", "test_fused",
                "test_fast", "test_readme", "test_benchmarks"]
LONGEST = 4  # the first four take one to two minutes each; the notebooks come right after them


def pytest_configure(config):
    config.addinivalue_line("markers", "threads(n): run the test with n torch threads")
    config.addinivalue_line("markers", "slow: needs the book, a browser, subprocesses or kernels (make test-fast skips it)")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}

    def module(item):
        return item.path.stem if item.path.suffix == ".py" else ""

    for item in items:
        if module(item) in rank or item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
    # stable: within a module or notebook the order stays. The longest modules, the notebooks (seconds when
    # the build's execution is reused), the other slow modules, the rest. `make test` runs pytest-xdist
    # with --no-loadscope-reorder, so its processes take the modules in this order and finish together.
    items.sort(key=lambda item: LONGEST - 0.5 if item.path.suffix == ".ipynb" else rank.get(module(item), len(rank)))


@pytest.fixture(autouse=True)
def _torch_threads(request):
    before = torch.get_num_threads()
    mark = request.node.get_closest_marker("threads")
    torch.set_num_threads(mark.args[0] if mark else TEST_THREADS)
    yield
    torch.set_num_threads(before)
