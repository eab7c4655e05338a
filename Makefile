# Two commands on a fresh machine: `make lab` and `make test`. Each sets itself up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kontext-teach-installed
LAB_ARGS ?=
# Jupyter refuses to run as root without this (containers, CI).
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
NB ?= notebooks/*.ipynb
# Nothing may touch the network while the series is tested or built. One thread per process:
# the miniature's matrices are tiny, and on 2 cores one thread runs the tests several times faster.
THREADS ?= 1
OFFLINE := KONTEXT_TEACH_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=$(THREADS)
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=300 --nbval-sanitize-with tests/sanitize.cfg

.PHONY: setup lab test unit nbval book execute embedded clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/setup.sh
	@touch $@

## make lab: open the series in JupyterLab
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(AS_ROOT) $(LAB_ARGS)

## make test: unit tests, then strict nbval over every notebook
test: setup
	$(OFFLINE) $(PY) -m pytest tests $(NBVAL) notebooks

unit: setup
	$(OFFLINE) $(PY) -m pytest tests

nbval: setup
	$(OFFLINE) $(PY) -m pytest $(NBVAL) $(NB)

## make book: execute every notebook headless and write HTML under build/
book: setup
	$(OFFLINE) $(VENV)/bin/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.kernel_name=kontext-teach --output-dir build $(NB)

## make execute NB=notebooks/04_packing.ipynb: re-execute notebooks in place (before committing)
execute: setup
	$(OFFLINE) $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.kernel_name=kontext-teach $(NB)

## make embedded: rebuild the shipped miniature: tokenizers and initial weights, then training on the
## toy world (about 25 minutes on 2 CPU cores; on a GPU add MINI_ARGS="--minutes 3 ...")
MINI_ARGS ?= --threads 1 --vae-minutes 6 --minutes 14 --quiet
embedded: setup
	$(PY) -m kontext_teach build-embedded --out build/mini-kontext-init
	$(PY) -m kontext_teach mini-training --base build/mini-kontext-init --out build/mini-kontext $(MINI_ARGS)
	rm -rf kontext_teach/toy/embedded_model && cp -r build/mini-kontext kontext_teach/toy/embedded_model

clean:
	rm -rf build $(VENV)
