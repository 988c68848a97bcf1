#!/usr/bin/env bash
# The prepared check for a machine with one GPU (a few minutes there), or its CPU mode here:
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu   # the same steps at small size, to know the script works
# Writes everything to benchmarks/results/gpu_check-<device>/ (a log, the overhead tables, 04's outputs); on the
# lent device machine copy that folder to $OUT: bash benchmarks/gpu_check.sh && cp -r benchmarks/results/gpu_check-cuda "$OUT"/
# It needs Fashion-MNIST under data/ (or Debian's package) for 04's quick profile.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE="$2"; fi
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/gpu_check-$DEVICE
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) device $DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
if [ "$DEVICE" = cpu ]; then
  SHAPES="small"; STEPS=5; PROFILE=smoke
  PRECISION_ARGS="--batch 32 --bank-images 256 --epoch-images 5000 --repeats 5"
else
  SHAPES="cifar100 imagenet"; STEPS=50; PROFILE=quick
  PRECISION_ARGS="--batch 256 --bank-images 10000 --epoch-images 50000 --repeats 20"
fi
echo "== 1. tests (not slow) on this machine"
"$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests -x
echo "== 2. DiRe's time and peak-memory overhead per synthesis step"
for shape in $SHAPES; do
  "$PY" benchmarks/dire_overhead.py --device "$DEVICE" --shape "$shape" --steps "$STEPS" --out "$OUT"
done
echo "== 3. the DiRe term alone against the release's loop"
"$PY" benchmarks/dire_term.py --device "$DEVICE" --min-run-time 1 | tee "$OUT/dire_term.txt"
echo "== 3b. fp32 against bf16 autocast (+ channels_last, cuDNN autotuning, data held on the device)"
# shellcheck disable=SC2086  # PRECISION_ARGS is a list of options
"$PY" benchmarks/precision.py --device "$DEVICE" $PRECISION_ARGS | tee "$OUT/precision.txt"
echo "== 3c. a student's 5 seeds as 5 models against one vmapped stack (issue 15; on this project's CPU x1.49 slower)"
"$PY" benchmarks/batched_seeds.py --device "$DEVICE" --steps "$STEPS" | tee "$OUT/batched_seeds.txt"
echo "== 4. notebook 04_timing_memory ($PROFILE profile) on $DEVICE"
"$PY" -m dire reproduce --profile "$PROFILE" --only 04_timing_memory --device "$DEVICE" --quiet
# keep the device's outputs apart from the committed CPU figures
cp "figures/$PROFILE/04_timing_memory.md" "figures/$PROFILE/04_timing_memory.json" "$OUT/"
git checkout -- "figures/$PROFILE" 2>/dev/null || true
echo "== done: $OUT"
