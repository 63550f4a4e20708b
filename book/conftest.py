"""pytest configuration for checking the book's notebooks with nbval.

Every code cell of a notebook is a test: it must run without an error, and a cell tagged
``nbval-check-output`` must print what the committed notebook shows (after the sanitizers of
``tests/nbval_sanitize.cfg``). This is nbval's ``--nbval-lax`` mode, with one change: a notebook that
the book's build has already executed is not executed again. Its outputs are read from the build's
execution cache (``_build/.jupyter_cache``, written by ``scripts/execute_book.py``; jupyter-cache
matches a notebook by its code cells and their metadata) and compared with the committed ones by
nbval's own comparison and sanitizers. A notebook with no matching execution in the cache, or a cache
made with another ``ddpm/`` (``scripts.execute_book.cache_is_current``), is executed in a kernel as
nbval always does. ``pytest book --nbval-lax`` executes every notebook regardless of the cache.

``DDPM_NB_CACHE`` names another cache folder (the tests of this file use it).

SymPy builds some expressions in an order that depends on Python's string hashing, so a printed
SymPy result can change from one process to the next. The committed outputs were made with
PYTHONHASHSEED=0 (see benchmarks/book_timing.py --inplace); the kernels nbval starts inherit this
process's environment, so they print the same (so do the build's, see scripts/execute_book.py).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, coalesce_streams

os.environ["PYTHONHASHSEED"] = "0"


def _cache_dir() -> Path:
    from scripts.execute_book import CACHE

    return Path(os.environ.get("DDPM_NB_CACHE", CACHE))


def executed_copy(nb):
    """The notebook with the outputs of the build's execution, or None if the cache has none for it."""
    from scripts.execute_book import cache_is_current

    folder = _cache_dir()
    if not (folder / "global.db").is_file() or not cache_is_current(folder):
        return None
    from jupyter_cache import get_cache

    try:
        return get_cache(str(folder)).merge_match_into_notebook(nb)[1]
    except KeyError:
        return None


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if file_path.suffix == ".ipynb" and not (opt.nbval or opt.nbval_lax):
        return BuiltNotebook.from_parent(parent, path=file_path)
    return None


class BuiltNotebook(IPyNbFile):
    """nbval's notebook collector in lax mode, reading the build's execution when there is one."""

    executed = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compare_outputs = False  # lax: only cells tagged nbval-check-output are compared

    def collect(self):
        for item in super().collect():
            yield BuiltCell.from_parent(self, name=item.name, cell_num=item.cell_num, cell=item.cell,
                                        options=item.options)

    def setup(self):
        self.executed = executed_copy(self.nb)
        if self.executed is None:
            super().setup()  # a kernel, as nbval does
        else:
            self.setup_sanitize_files()


class BuiltCell(IPyNbCell):
    def runtest(self):
        executed = self.parent.executed
        if executed is None:
            return super().runtest()
        if self.options["skip"]:
            pytest.skip()
        cells = [c for c in executed.cells if c.cell_type == "code"]
        outs = coalesce_streams(copy.deepcopy(cells[self.cell_num].get("outputs", [])))
        self.test_outputs = outs
        errors = [o for o in outs if o.get("output_type") == "error"]
        if errors and not self.options["check_exception"]:
            self.raise_cell_error("Cell execution caused an exception", "\n" + "\n".join(errors[0].get("traceback", [])))
        unrun = self.cell.execution_count is None
        if unrun and self.cell.outputs:
            self.raise_cell_error("Unrun reference cell has outputs")
        if self.options["check"] and not unrun and not self.compare_outputs(outs, coalesce_streams(self.cell.outputs)):
            self.raise_cell_error("Cell outputs differ", "\n".join(self.comparison_traceback))
