# The two commands of the README: `make reproduce` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: install lint test test-fast reproduce book try-it clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[cpu,book,dev,export,sweep]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) lint try-it
	$(BIN)/python -m pytest

# lint and import order (ruff, configured in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check ulvm tests

# the package only: skips the notebook, book and browser tests
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow"

# PROFILE=paper (a CUDA GPU): prepares, trains and tests the grid through the sweep, then builds the book itself;
# e.g. make reproduce PROFILE=paper ARGS="--isic2017-raw RAW --ph2-raw RAW --runs-per-gpu 14 --compile"
reproduce: $(STAMP)
	$(BIN)/ulvm reproduce --profile $(PROFILE) $(ARGS)
	if [ "$(PROFILE)" = quick ]; then $(MAKE) book; fi

book: $(STAMP) try-it
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# The Try it page's files: onnxruntime-web from the npm registry (once; needs node and npm), the shipped
# weights exported to ONNX, into book/web/build/ (git-ignored), which the book copies into its HTML.
try-it: $(STAMP)
	$(BIN)/ulvm try-it

clean:
	rm -rf _build book/executed figures/generated book/web/build
