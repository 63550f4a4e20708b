# Diffusion, Derived: the two set-up commands are `make book` and `make test` (see README.md).
PYTHON ?= python3
PORT ?= 8000
BOOK_SOURCES := $(wildcard book/*.ipynb book/*.md book/*.bib book/data/*) _config.yml _toc.yml $(wildcard ddpm/*.py ddpm/nets/*.py) $(wildcard scripts/site_fixes.py scripts/site_static/*)

.PHONY: install system-deps node-deps book cheatsheet test test-fast serve clean coursework grade format

# Debian packages: headless Chromium + driver for the browser tests and the cheat sheet's PDF, Node.js to typeset
# the maths when the site is built (npm installs axe-core for the tests), poppler-utils (pdfinfo) for the PDF test,
# Fashion-MNIST for the data tests, bubblewrap (bwrap) for the coursework grader's sandbox.
system-deps:
	@need=""; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	command -v chromedriver >/dev/null 2>&1 || need="$$need chromium-driver"; \
	command -v node >/dev/null 2>&1 || need="$$need nodejs"; \
	command -v npm >/dev/null 2>&1 || need="$$need npm"; \
	command -v pdfinfo >/dev/null 2>&1 || need="$$need poppler-utils"; \
	command -v bwrap >/dev/null 2>&1 || need="$$need bubblewrap"; \
	[ -d /usr/share/datasets/fashion-mnist ] || need="$$need dataset-fashion-mnist"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	  else echo "warning: install Debian's$$need (needs root)"; fi; \
	fi

# axe-core (the browser tests' accessibility audit), exactly as package-lock.json pins it, into node_modules/;
# skipped when that version is already there, so the tests themselves never need the network.
node-deps: system-deps
	@if [ "$$(node -p "try{require('./node_modules/axe-core/package.json').version}catch(e){''}" 2>/dev/null)" != "$$(node -p "require('./package-lock.json').packages['node_modules/axe-core'].version")" ]; then \
	  npm ci --no-audit --no-fund --loglevel=error; fi

install: system-deps node-deps
	$(PYTHON) -m pip install -q -r requirements.txt
	$(PYTHON) -m pip install -q --no-deps -e .

# Builds the website into _build/html; fails on any warning or error. The notebooks are executed first, as many
# at a time as there are cores, into jupyter-book's execution cache (_build/.jupyter_cache, scripts/execute_book.py);
# the build reads their outputs from it (execute_notebooks: cache) and so do the notebook tests (book/conftest.py):
# each notebook runs once. The build also typesets the maths (Node.js, scripts/site_fixes.py); its log goes to
# _build/build.log too (the site tests check it has no warning). PYTHONHASHSEED=0: the committed outputs were made
# so (SymPy).
_build/html/index.html: $(BOOK_SOURCES)
	@mkdir -p _build
	PYTHONHASHSEED=0 $(PYTHON) -m scripts.execute_book
	PYTHONHASHSEED=0 $(PYTHON) -c "from jupyter_book.cli.main import main; main()" build . --all -W --keep-going >_build/build.log 2>&1; \
	  rc=$$?; cat _build/build.log; exit $$rc
	@touch $@

book: install _build/html/index.html

# The cheat sheet as a PDF (A4, headless Chromium): _build/html/cheatsheet.pdf, which its page links, and a
# copy in _build/. Only this target (and the site test that checks it) prints it: the site build does not.
cheatsheet: _build/html/index.html
	$(PYTHON) scripts/cheatsheet_pdf.py

_build/html/cheatsheet.pdf: _build/html/index.html
	$(PYTHON) scripts/cheatsheet_pdf.py

# Formats the code cells of every notebook with ruff, at the line length of pyproject.toml
# ([tool.ruff]: what fits the text column at 1280 px). Stored outputs are left as they are.
format:
	$(PYTHON) -m ruff format book/*.ipynb
	@# what the formatter cannot wrap (comments, strings, docstrings): listed for their authors, not fatal
	-@$(PYTHON) -m ruff check --select E501 --output-format concise book/*.ipynb

# Every test: the package (pytest), the notebooks (nbval, against the build's execution) and the website (headless
# Chromium), on as many processes as there are cores (pytest-xdist; a module's or a notebook's tests stay together,
# and the processes take the modules slowest first, in the order tests/conftest.py gives).
test: install _build/html/index.html _build/html/cheatsheet.pdf
	$(PYTHON) -m pytest -n auto --dist loadfile --no-loadscope-reorder

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

# make grade SUBMISSION=<class folder or notebook> [SEED=n] [GRADE_OUT=folder] [JOBS=n]: grades offline, each
# student in a bubblewrap sandbox; writes class.csv, report.json and per student report.json + results.json.
GRADE_OUT ?=
JOBS ?= 1
grade: install
	@test -n "$(SUBMISSION)" || { echo "usage: make grade SUBMISSION=<class folder or notebook> [SEED=n] [GRADE_OUT=folder]" >&2; exit 2; }
	@test -f $(COURSEWORK)/grader/manifest.json || $(PYTHON) -m coursework.build --seed $(SEED)
	$(PYTHON) -m coursework.grade "$(SUBMISSION)" --grader $(COURSEWORK)/grader --jobs $(JOBS) $(if $(GRADE_OUT),--out "$(GRADE_OUT)")
