"""Shared pytest set-up. Under CI (CI=true) hypothesis runs derandomized, so a green run is
repeatable; locally it keeps drawing fresh examples."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
