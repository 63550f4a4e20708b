"""Shared pytest set-up.

- Hypothesis: under CI (the environment variable ``CI`` set, as ``.ci/run`` does) it runs
  derandomized, so a green run is repeatable; locally it keeps drawing fresh examples.
- Threads: every test runs with ``DDPM_TEST_THREADS`` torch threads (default: at most 2, the CI
  machine's cores), set by one fixture and restored after the test, instead of module-level
  ``torch.set_num_threads`` calls that leak into every later module. A module or test that wants
  another count says ``pytest.mark.threads(n)``; whatever a test (or the CLI it runs) sets is undone.
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TEST_THREADS = int(os.environ.get("DDPM_TEST_THREADS", max(1, min(2, torch.get_num_threads()))))


def pytest_configure(config):
    config.addinivalue_line("markers", "threads(n): run the test with n torch threads")


@pytest.fixture(autouse=True)
def _torch_threads(request):
    before = torch.get_num_threads()
    mark = request.node.get_closest_marker("threads")
    torch.set_num_threads(mark.args[0] if mark else TEST_THREADS)
    yield
    torch.set_num_threads(before)
