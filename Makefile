# advkit: the two set-up commands of README.md.
#   make demo  - virtual environment, torch then advkit, the default data, the main job; prints the report's path
#   make test  - the same set-up, then the test suite, the docs build, mypy and the plain-install check
#   make docs  - the documentation site (reference pages generated from the code) into site/, --strict
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test docs plain-install venv data browser lint clean

$(BIN)/advkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, so that advkit's own requirement is already satisfied and nothing pulls another build
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,docs]"
	@touch $(BIN)/advkit

venv: $(BIN)/advkit

# Fashion-MNIST: Debian's package when apt is available (and we are root), else the canonical download.
data: venv
	@if [ -d "$(FASHION_DIR)" ]; then echo "fashion-mnist: found at $(FASHION_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || $(BIN)/advkit data fetch fashion-mnist; \
	else $(BIN)/advkit data fetch fashion-mnist; fi

# The web study's browser test (issue 28) drives headless Chromium through chromium-driver: Debian's packages when apt
# is available (and we are root); elsewhere install both yourself (the test then says what it misses).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then echo "chromium: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver not found and apt-get unavailable: the browser test will say so"; fi

RUN_ID := $(shell date +%Y%m%d-%H%M%S)

# The main job: the zoo's clean accuracy, then the SGM transfer table on the Fashion-MNIST zoo (quick version).
demo: data
	$(BIN)/advkit evaluate --all --dataset fashion-mnist --out runs/demo-$(RUN_ID)/zoo-accuracy
	$(BIN)/advkit reproduce sgm --quick --out runs/demo-$(RUN_ID)/sgm-quick

# The test suite, the documentation build (a broken link or an unreadable docstring fails it), mypy, then the
# plain-install check: the wheel built from this checkout, installed without extras into a clean virtual
# environment (torch first), runs the CLI from a folder outside the checkout.
test: data browser
	ADVKIT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q -m "not slow" tests
	$(MAKE) --no-print-directory docs
	$(BIN)/mypy src/advkit
	scripts/check_plain_install.sh $(PYTHON) "$(TORCH)"

# The documentation site: scripts/gen_docs.py writes the pages generated from the code (attack registry, experiment
# schema, zoo cards, CLI, reproductions) into .docs-gen/, then mkdocs builds docs/ into site/ (both git-ignored).
docs: venv
	$(BIN)/python scripts/gen_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

plain-install:
	scripts/check_plain_install.sh $(PYTHON) "$(TORCH)"

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy src/advkit

clean:
	rm -rf $(VENV) runs .pytest_cache site .docs-gen
