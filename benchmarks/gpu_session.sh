#!/usr/bin/env bash
# One prepared GPU session (device machines are lent for minutes): checks and times everything
# that needs a GPU in one call. Usage on the device machine, from the repository root:
#   OUT=/some/dir bash benchmarks/gpu_session.sh
# Writes logs and JSON under $OUT; benchmarks/RESULTS.md records what a run printed.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
SMALL=${SMALL:-0}   # SMALL=1: a tiny dry run (works on CPU)
log() { echo "=== $(date +%T) $*"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

log "1. estimator properties on the GPU (CUDA cases of the property tests)"
timeout 150 python -m pytest -q -x -p no:cacheprovider tests/test_properties.py -k "cuda or device" 2>&1 | tail -3

if [ "$SMALL" = 1 ]; then GPU_ARGS="--small"; else GPU_ARGS=""; fi
log "2. benchmarks/gpu.py: blocked and fused paths, each against float64 and timed at 100 x 50k (TFLOP/s vs fp32 peak)"
timeout 240 python benchmarks/gpu.py $GPU_ARGS --package-blocks --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log" | tail -40

log "3. default blocked engine for comparison, 10k training images"
if [ "$SMALL" = 1 ]; then N=64; M=2; else N=10000; M=100; fi
timeout 120 python benchmarks/gpu.py $GPU_ARGS --package-blocks --n-train $N --n-meas $M --json "$OUT/gpu_blocked.json" 2>&1 | tail -12

log "4. full-profile training, 3 families, denoising on the embedded photos, then compare"
if [ "$SMALL" = 1 ]; then STEPS=10; NT=40; W=8; else STEPS=3000; NT=3000; W=128; fi
for arch in resnet unet patchmlp; do
  timeout 150 python -m lemmse_lite train --profile full --dataset photos --n-train $NT --arch $arch \
    --steps $STEPS --width $W --out "$OUT/run_$arch" --quiet 2>&1 | tail -2
done
timeout 150 python -m lemmse_lite compare --profile full "$OUT"/run_resnet "$OUT"/run_unet "$OUT"/run_patchmlp \
  --sigmas 0.05 0.1 0.2 0.4 --n-measurements 16 --n-test 16 --out "$OUT/compare" --quiet 2>&1 | tail -30
rm -rf "$OUT"/run_* "$OUT"/compare/compare.png   # at most 8 files come back

log "5. lemmse reproduce, full profile, denoising agreement on the embedded grey set at its largest N"
if [ "$SMALL" = 1 ]; then RN=40; else RN=3651; fi
timeout 240 python -m lemmse_lite reproduce --profile full --only agreement+denoising \
  --set dataset=photos dataset_shift=faces image_size=32 n_train=$RN --out "$OUT/reproduce" --quiet 2>&1 | tail -20
rm -rf "$OUT"/reproduce/cells "$OUT"/reproduce/figures
log "done"
