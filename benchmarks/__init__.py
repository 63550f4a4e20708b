"""The project's benchmarks: each module is a script (``python -m benchmarks.<name>``) that writes its results as
JSON (with the card, the torch version and the commit) under ``benchmarks/results/`` or ``$OUT``."""
