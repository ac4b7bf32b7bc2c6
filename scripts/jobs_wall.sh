#!/usr/bin/env bash
# Wall time of RUNS x K folds trained with JOBS=1 THREADS=2 against JOBS=2 THREADS=1 on CPU
# (docs/scale-out.md#measuring). Each configuration trains into its own models folder under $WORK
# from the same folds file and the same decode cache, built before the clocks start
# (python -m pipeline.tools prepare: what make train builds before any job starts).
# COMPARE=1 adds a JOBS=1 THREADS=1 run and checks that its OOF and test logits are bit-identical
# to JOBS=2 THREADS=1's (same threads per job).
#
#   scripts/jobs_wall.sh                              # digits demo, both demo recipes, K=5
#   COMP=../shared/data/cifar10 RUNS="resnet18_32 mnv3_32" SET="epochs=1" scripts/jobs_wall.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMP=${COMP:-input/digits}
RUNS=${RUNS:-demo_resnet10t demo_mobilenetv3}
MODELS_SRC=${MODELS_SRC:-models}  # where the recipes <run>.toml are
K=${K:-5}
SET=${SET:-}
COMPARE=${COMPARE:-0}
WORK=${WORK:-/tmp/jobs_wall}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$COMP" = input/digits ] && [ ! -f input/digits/train.csv ]; then
  "$PY" -m pipeline demo-data --out input/digits
fi
rm -rf "$WORK" && mkdir -p "$WORK"
"$PY" -m pipeline folds --comp "$COMP" --models "$WORK/prep" --output "$WORK" --k "$K" \
  --cache "$WORK/cache" > "$WORK/folds.log"
"$PY" -m pipeline.tools prepare --comp "$COMP" --models "$MODELS_SRC" --output "$WORK" \
  --cache "$WORK/cache" --runs "$RUNS" --set "$SET" --device cpu

configs=("1 2" "2 1")
[ "$COMPARE" = 1 ] && configs+=("1 1")
for cfg in "${configs[@]}"; do
  read -r jobs threads <<< "$cfg"
  m="$WORK/models_j${jobs}_t${threads}"
  mkdir -p "$m" && for r in $RUNS; do cp "$MODELS_SRC/$r.toml" "$m/"; done
  start=$(date +%s.%N)
  "$PY" -m pipeline train --comp "$COMP" --models "$m" --output "$WORK" --cache "$WORK/cache" \
    --runs "$RUNS" --set "$SET" --device cpu --jobs "$jobs" --threads "$threads" \
    > "$WORK/train_j${jobs}_t${threads}.log" 2>&1
  end=$(date +%s.%N)
  printf 'JOBS=%s THREADS=%s: %.0f s wall (%s; load now %s)\n' "$jobs" "$threads" \
    "$(echo "$end - $start" | bc)" "$WORK/train_j${jobs}_t${threads}.log" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
done
if [ "$COMPARE" = 1 ]; then
  "$PY" - "$WORK" $RUNS <<'PYEOF'
import sys
from pathlib import Path

import numpy as np

work, *runs = sys.argv[1:]
for a in sorted(Path(work, "models_j2_t1").glob("*/*/*.npz")):
    b = Path(work, "models_j1_t1", a.relative_to(Path(work, "models_j2_t1")))
    same = np.array_equal(np.load(a)["logits"], np.load(b)["logits"])
    print(f"{a.relative_to(work)}: {'bit-identical' if same else 'DIFFERS'} to JOBS=1 THREADS=1")
PYEOF
fi
