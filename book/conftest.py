"""pytest configuration for running the book's notebooks under nbval.

SymPy builds some expressions in an order that depends on Python's string hashing, so a printed
SymPy result can change from one process to the next. The committed outputs were made with
PYTHONHASHSEED=0 (see benchmarks/book_timing.py --inplace); the kernels nbval starts inherit this
process's environment, so they print the same.
"""

import os

os.environ["PYTHONHASHSEED"] = "0"
