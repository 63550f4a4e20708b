"""Shared pytest set-up.

- Hypothesis: under CI (the environment variable ``CI`` set, as ``.ci/run`` does) it runs
  derandomized, so a green run is repeatable; locally it keeps drawing fresh examples.
- Threads: every test runs with ``DDPM_TEST_THREADS`` torch threads (default: at most 2, the CI
  machine's cores), set by one fixture and restored after the test, instead of module-level
  ``torch.set_num_threads`` calls that leak into every later module.
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TEST_THREADS = int(os.environ.get("DDPM_TEST_THREADS", max(1, min(2, torch.get_num_threads()))))


@pytest.fixture(autouse=True)
def _torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(before)
