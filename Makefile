# Two commands on a fresh machine: `make lab` and `make test`. Each sets itself up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kontext-teach-installed
# Extra options for `jupyter lab`, e.g. make lab LAB_ARGS="--no-browser --port 8899"
LAB_ARGS ?=
# Jupyter refuses to run as root without this (containers, CI).
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
NB ?= notebooks/*.ipynb
# Nothing may touch the network while the series is tested or built. One thread per process:
# the miniature's matrices are tiny, and on 2 cores one thread runs the tests several times faster.
THREADS ?= 1
OFFLINE := KONTEXT_TEACH_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=$(THREADS)
# Test files run in parallel, one process per core (at most 4), each process on THREADS threads; a
# notebook's cells stay together in one process (--dist loadfile), as nbval needs. JOBS=0: serial.
JOBS ?= auto
PARALLEL := $(if $(filter 0,$(JOBS)),,-n $(JOBS) --maxprocesses=4 --dist loadfile)
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=300 --nbval-sanitize-with tests/sanitize.cfg

.PHONY: setup lab test unit nbval book book-check execute train embedded clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/setup.sh
	@touch $@

## make lab: open the series in JupyterLab
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(AS_ROOT) $(LAB_ARGS)

## make test: unit tests, then strict nbval over every notebook
test: setup
	$(OFFLINE) $(PY) -m pytest $(PARALLEL) tests $(NBVAL) notebooks

unit: setup
	$(OFFLINE) $(PY) -m pytest $(PARALLEL) tests

nbval: setup
	$(OFFLINE) $(PY) -m pytest $(PARALLEL) $(NBVAL) $(NB)

## make book: execute every notebook headless and write HTML under build/ that reads offline
## (widgets as static views of their stored state, formulas as MathML, no CDN scripts)
book: setup
	$(OFFLINE) $(VENV)/bin/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.kernel_name=kontext-teach --ExecutePreprocessor.store_widget_state=True \
		--output-dir build $(NB)
	$(PY) scripts/offline_book.py $(patsubst notebooks/%.ipynb,build/%.html,$(wildcard $(NB)))

## make book-check: the book in headless Chromium, network off (skipped without chromium); screenshots in build/shots
book-check:
	$(PY) scripts/check_book.py $(patsubst notebooks/%.ipynb,build/%.html,$(wildcard $(NB))) --screenshots build/shots

## make execute NB=notebooks/04_packing.ipynb: re-execute notebooks in place (before committing)
execute: setup
	$(OFFLINE) $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 \
		--ExecutePreprocessor.kernel_name=kontext-teach $(NB)

## make train ARGS="--data my_pairs/ --output runs/my_lora": train a LoRA (ARGS=--help lists the options)
ARGS ?= --help
train: setup
	$(PY) -m kontext_teach train $(ARGS)

## make embedded: rebuild the miniature from scratch in one command, with the recipe of the shipped weights'
## last two runs (notebook A1): VAE, then the transformer as a CFG teacher (prompt dropout, 128/512-token steps,
## the binding families and the edited tokens stressed, at the shipped shape: 2 double + 4 single blocks), then guidance distillation into the student; then the
## report (evaluation.json); then the LoRAs that belong to those weights: the shipped flip LoRA and notebook 09's
## experiment table. About 100 minutes on 2 CPU cores, and 70 more for the LoRAs. On a GPU: MINI_ARGS="... --batch 256
## --train-pairs 60000 --workers 4" with shorter budgets (scripts/gpu_session.sh).
MINI_ARGS ?= --threads 2 --workers 2 --vae-minutes 6 --minutes 60 --train-pairs 20000 --batch 64 --lr 5e-4 \
	--single-blocks 4 --guidance-range 1 1 --prompt-dropout 0.1 --edit-weight 4 --shape-weight 4 --family-weights 4,1,4,1 \
	--long-text-lengths 128,512 --long-share 0.25 --long-batch 8 --distill-minutes 20 --eval-pairs 0 --quiet
embedded: setup
	$(PY) -m kontext_teach build-embedded --out build/mini-kontext-init
	$(PY) -m kontext_teach mini-training --base build/mini-kontext-init --out build/mini-kontext $(MINI_ARGS)
	$(PY) -m kontext_teach.toy.miniature_report build/mini-kontext --threads 2
	rm -rf kontext_teach/toy/embedded_model && cp -r build/mini-kontext kontext_teach/toy/embedded_model
	$(PY) -m kontext_teach.toy.shipped_lora build --threads 1
	$(PY) -m kontext_teach.toy.lora_experiments --threads 1 --json kontext_teach/toy/embedded_model/lora_experiments.json

clean:
	rm -rf build $(VENV)
