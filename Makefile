# Diffusion, Derived: the two set-up commands are `make book` and `make test` (see README.md).
PYTHON ?= python3
PORT ?= 8000
BOOK_SOURCES := $(wildcard book/*.ipynb book/*.md book/*.bib book/data/*) _config.yml _toc.yml $(wildcard ddpm/*.py ddpm/nets/*.py) $(wildcard scripts/site_fixes.py scripts/site_static/*)

.PHONY: install system-deps book cheatsheet test test-fast serve clean coursework grade

# Debian packages: headless Chromium + driver for the browser tests and the cheat sheet's PDF, Node.js to typeset
# the maths when the site is built, poppler-utils (pdfinfo) for the PDF test, Fashion-MNIST for the data tests.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1 || ! command -v pdfinfo >/dev/null 2>&1 || [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nodejs poppler-utils dataset-fashion-mnist >/dev/null; \
	  else echo "warning: install Debian's chromium, chromium-driver, nodejs, poppler-utils and dataset-fashion-mnist (needs root)"; fi; \
	fi

install: system-deps
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -e .

# Builds the website into _build/html; fails on any warning or error. The notebooks are executed first, as many
# at a time as there are cores, into jupyter-book's execution cache (_build/.jupyter_cache, scripts/execute_book.py);
# the build reads their outputs from it (execute_notebooks: cache) and so do the notebook tests (book/conftest.py):
# each notebook runs once. The build also typesets the maths (Node.js) and prints the cheat sheet to
# _build/cheatsheet.pdf (scripts/site_fixes.py). PYTHONHASHSEED=0: the committed outputs were made so (SymPy).
_build/html/index.html: $(BOOK_SOURCES)
	PYTHONHASHSEED=0 $(PYTHON) -m scripts.execute_book
	PYTHONHASHSEED=0 $(PYTHON) -c "from jupyter_book.cli.main import main; main()" build . --all -W --keep-going
	@touch $@

book: install _build/html/index.html

# The cheat sheet as a PDF (A4, headless Chromium): _build/cheatsheet.pdf, and the copy the page links.
cheatsheet: _build/html/index.html
	$(PYTHON) scripts/site_fixes.py cheatsheet

# Every test: the package (pytest), the notebooks (nbval, against the build's execution) and the website (headless
# Chromium), on as many processes as there are cores (pytest-xdist; a module's or a notebook's tests stay together).
test: install _build/html/index.html
	$(PYTHON) -m pytest -n auto --dist loadfile

# The package's unit tests alone: no book, no browser, no notebook, no subprocess (tests/conftest.py's slow mark).
test-fast:
	$(PYTHON) -m pytest tests -m "not slow" -q -n auto

serve:
	@test -f _build/html/index.html || { echo "run 'make book' first"; exit 1; }
	@echo "Serving the book at http://127.0.0.1:$(PORT)/ (Ctrl-C to stop)"
	$(PYTHON) scripts/serve.py --port $(PORT)

clean:
	rm -rf _build

# Coursework (README "For instructors"): student and instructor editions and the grader, from the chapters.
SEED ?= 0
COURSEWORK := $(if $(filter-out 0,$(SEED)),_build/coursework-seed$(SEED),_build/coursework)
coursework: install
	$(PYTHON) -m coursework.build --seed $(SEED)

# make grade SUBMISSION=<notebook or folder> [SEED=n]: grades offline, prints per exercise and 'score: P/M'.
grade: install
	@test -n "$(SUBMISSION)" || { echo "usage: make grade SUBMISSION=<notebook or folder> [SEED=n]" >&2; exit 2; }
	@test -f $(COURSEWORK)/grader/manifest.json || $(PYTHON) -m coursework.build --seed $(SEED)
	$(PYTHON) -m coursework.grade "$(SUBMISSION)" --grader $(COURSEWORK)/grader --report $(COURSEWORK)/grade-report.json
