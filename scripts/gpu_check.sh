#!/usr/bin/env bash
# GPU check (docs/scale-out.md#gpu-check): `make bench` on synthetic 224 px images in
# memory (no competition, nothing downloaded, nothing written but $OUT_DIR) with the machine's own
# torch: resnet50 and efficientnet_b0, batch 128, bf16; the loader's augmentation, then the same
# crop + flip on the GPU (device_augment), then that with torch.compile. Prints each bench table
# and a summary of real loop / bare model (c/b; target >= 0.90). At most BUDGET (450 s) of benches
# plus start-up: under 8 minutes on one GPU.
#
#   scripts/gpu_check.sh                  # on the GPU machine, from a checkout of this repository
#   PY=/opt/conda/bin/python scripts/gpu_check.sh
#
# Needs torch with CUDA, timm, albumentations, opencv, pandas, scikit-learn (pip install -e .
# --no-deps on top of the machine's torch, or put the checkout on PYTHONPATH as done below).
# Smaller settings for a dry run on CPU:
#   DEVICE=cpu SIZE=16 BATCH=8 BACKBONES=test_resnet AMP=off IMAGES=32 BATCHES=2 scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-224}
BATCH=${BATCH:-128}
AMP=${AMP:-bf16}
IMAGES=${IMAGES:-2048}
BATCHES=${BATCHES:-30}
BACKBONES=${BACKBONES:-resnet50 efficientnet_b0}
LIMIT=${LIMIT:-150}  # seconds per bench (compile included); a bench past it is reported and skipped
BUDGET=${BUDGET:-450}  # seconds for all benches; the compile variants run last and go first
OUT_DIR=${OUT_DIR:-gpu_check_$(date +%Y%m%d_%H%M%S)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"

if ! "$PY" -c "import torch, timm, albumentations, cv2, pandas, sklearn, matplotlib" 2>/dev/null; then
  echo "missing packages; install them beside the machine's torch:"
  echo "  $PY -m pip install timm 'albumentations==2.0.8' opencv-python-headless pandas scikit-learn matplotlib tqdm"
  exit 1
fi
"$PY" - <<'PYEOF' | tee "$OUT_DIR/env.txt"
import os, platform, torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU {torch.cuda.get_device_name(0) if cuda else 'none'}, {len(os.sched_getaffinity(0))} cores")
PYEOF

VARIANTS=("augment=light" "augment=light device_augment=true" "augment=light device_augment=true compile=true")
NAMES=("loader-aug" "device-aug" "device-aug+compile")
for i in "${!VARIANTS[@]}"; do
  for bb in $BACKBONES; do
    log="$OUT_DIR/${bb}_${NAMES[$i]}.txt"
    left=$(( BUDGET - SECONDS ))
    if [ "$left" -lt 30 ]; then
      echo "== $bb ${NAMES[$i]}: skipped, BUDGET=${BUDGET}s spent" | tee "$log"; continue
    fi
    set_="backbone=$bb image_size=$SIZE batch_size=$BATCH amp=$AMP pretrained=none ${VARIANTS[$i]}"
    echo "== $bb ${NAMES[$i]}: SET=\"$set_\""
    timeout "$(( left < LIMIT ? left : LIMIT ))" "$PY" -m pipeline.tools bench --synthetic --images "$IMAGES" \
      --batches "$BATCHES" --device "$DEVICE" --set "$set_" 2>&1 | grep -v '^\s*$' | tee "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || echo "   exit $rc (124: past LIMIT=${LIMIT}s or BUDGET)" | tee -a "$log"
  done
done

echo
echo "summary ($OUT_DIR): img/s of the loader alone, the bare model, the real loop; c/b target >= 0.90"
printf '%-18s %-20s %10s %10s %10s %7s %7s\n' backbone variant loader bare real c/b e/d
for bb in $BACKBONES; do
  for name in "${NAMES[@]}"; do
    log="$OUT_DIR/${bb}_${name}.txt"
    num() { grep -E "^\s+$1" "$log" 2>/dev/null | head -1 | awk '{for(i=1;i<=NF;i++) if($(i+1)=="img/s") print $i}'; }
    ratio() { grep -oE "$1 = [0-9.]+" "$log" 2>/dev/null | awk '{print $3}'; }
    printf '%-18s %-20s %10s %10s %10s %7s %7s\n' "$bb" "$name" "$(num 'loader alone')" \
      "$(num 'bare fwd\+bwd, (channels_last|contiguous) ')" "$(num 'real training loop')" \
      "$(ratio c/b)" "$(ratio e/d)"
  done
done
