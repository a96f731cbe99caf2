# The two commands of the README: `make book` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is named after the content of what is installed, so a venv is rebuilt exactly when the
# requirements change (not when a fresh clone makes the files look newer).
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
NBVAL  := --nbval --nbval-sanitize-with tests/sanitize.cfg --nbval-current-env

.PHONY: venv book book-ko test test-fast lint notebooks exercises benchmark clean

venv: $(STAMP)

$(STAMP):
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Build the HTML book into _build/html, and its Korean edition (한국어판) into _build/html/ko, from
# locales/ko/*.po (sources generated into ko/ by tools/i18n.py); any Sphinx warning or notebook problem
# fails the build.
book: venv
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	$(MAKE) book-ko

book-ko: venv
	$(BIN)/python tools/i18n.py build
	rm -rf _build/ko _build/html/ko
	$(BIN)/jupyter-book build ko --path-output _build/ko --warningiserror --keep-going
	mkdir -p _build/html && cp -r _build/ko/_build/html _build/html/ko

# Everything CI checks: lint; package and policy tests, graders and their catalogues of wrong answers
# (English and Korean), trusted grading's attack suite, nbgrader, the Korean catalogues; every chapter and
# solution re-executed under nbval (stored outputs must match); then both books built and the checks of
# the built HTML in a browser.
test: venv lint
	$(BIN)/python -m pytest tests -n 2 --dist loadscope -m "not html"
	$(BIN)/python -m pytest $(NBVAL) chapters solutions -n 2 --dist loadscope
	$(MAKE) book
	$(BIN)/python -m pytest tests -m html

# ruff: lint rules and formatting of the package, tools, tests and every notebook (notebooks at the width of
# the book's code column; see pyproject.toml and chapters/ruff.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Quicker loop while writing: no notebook execution, no book build.
test-fast: venv
	$(BIN)/python -m pytest tests -n 2 -m "not html and not slow"

notebooks: venv
	$(BIN)/python tools/execute_notebooks.py --all

exercises: venv
	$(BIN)/python tools/make_exercises.py

benchmark: venv
	$(BIN)/python tools/benchmark.py

clean:
	rm -rf _build .pytest_cache .hypothesis
