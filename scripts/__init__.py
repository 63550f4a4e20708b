"""Build and test helpers of the repository (not part of the ``ddpm`` package)."""
