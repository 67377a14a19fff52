#!/usr/bin/env bash
# The whole GPU check in one script, for a machine with an NVIDIA GPU (the project's GPU machine
# is one H100, 16 cores, Python 3.12, CUDA 13, torch 2.11; no torchvision, ray or shapely):
#
#   tools/gpu_check.sh STAGE [OUT]      STAGE: tests | bench | profile | train | all     OUT: log folder
#
#   tests    the GPU tests first (tests/loader/test_gpu.py, the DALI and noise tests on the GPU,
#            torchrun with two processes on the one GPU), then the whole suite; the skips
#            are listed                                                  -> OUT/pytest.log
#   bench    fastload bench --workers $WORKERS (default: all cores) -> OUT/report.md,
#            OUT/results.json, OUT/throughput.png (commit them under docs/bench_gpu/),
#            OUT/bench.log, OUT/bench-rows.tar.gz; then benchmarks/bench_dali.py (the DALI
#            pipeline alone: prefetch, hw_decoder_load, the noise field) -> OUT/bench.log
#   profile  where the time of a fastload-gpu batch goes (torch profiler), the data wait of
#            a training loop, and DALI's hardware JPEG decoder share swept (hw_decoder_load)
#                                                                        -> OUT/profile.txt
#   train    tools/train_centernet.py --device cuda with each loader (data wait, GPU idle;
#            TRAIN_DATA, TRAIN_STEPS)                                   -> OUT/train.log
#   all      the four, one after the other (longer than one device call: run them apart)
#
# Every stage is bounded (STAGE_TIMEOUT seconds in all, default 480; the wheel install comes
# on top) so that it ends, and leaves its logs, within one 10-minute device call. Missing Python packages (DALI, lmdb,
# simplejpeg, albumentations on the project's GPU machine) come as wheels carried in parts
# .dw0 .. .dwN (../shared/tools/device-wheels.sh makes them); when .dw0/install.sh is here it
# is run first (once per machine) and its output goes to OUT/env.txt. Everything goes under
# OUT, at most 8 files per stage (env.txt + the files above), so that the device tool brings all
# of it back. Exit status: non-zero when a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
OUT=${2:-${OUT:-gpu-check-out}}
WORKERS=${WORKERS:-$(nproc)}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-480}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: >"$OUT/env.txt"
if [ -f .dw0/install.sh ] && [ ! -f /tmp/site/.fastload-installed ]; then
  if bash .dw0/install.sh >>"$OUT/env.txt" 2>&1; then
    touch /tmp/site/.fastload-installed
  else
    echo "wheel install failed (see $OUT/env.txt)"; exit 1
  fi
fi
[ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"
status=0

verdict() {  # verdict RC LOG: note a failure (a timeout by name) in LOG and in the status
  if [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; then
    echo "==== TIMED OUT (STAGE_TIMEOUT=$STAGE_TIMEOUT s for the stage)" | tee -a "$2"
  fi
  [ "$1" -eq 0 ] || status=1
}

left() {  # seconds left of this stage's budget (at least 30)
  local l=$((STAGE_TIMEOUT - (SECONDS - stage_start)))
  echo $((l > 30 ? l : 30))
}

env_report() {
  {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    echo "cores: $(nproc)"
    python3 - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "nvidia.dali", "numba", "numpy", "lmdb", "simplejpeg", "albumentations", "cv2",
          "torchvision", "matplotlib", "pytest_benchmark", "ray", "shapely"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__, e)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
  } >>"$OUT/env.txt" 2>&1
}

stage_tests() {
  stage_start=$SECONDS
  # the GPU-specific tests first, so that their result is in the log even if the suite runs long
  timeout $((STAGE_TIMEOUT / 2)) python3 -m pytest -q -rs -p no:cacheprovider -s \
    tests/loader/test_gpu.py tests/augment/test_dali.py tests/augment/test_noise_field.py \
    tests/loader/test_dataloader.py::test_gpu_dali_batches_on_device_match_cpu_path \
    2>&1 | tee "$OUT/pytest.log" | grep -E "vs CPU|passed|failed|error" | tail -n 20
  verdict "${PIPESTATUS[0]}" "$OUT/pytest.log"
  echo "==== the whole suite (but tests/loader/test_gpu.py, run above)" >>"$OUT/pytest.log"
  timeout "$(left)" python3 -m pytest -q -rs -p no:cacheprovider --ignore=tests/loader/test_gpu.py \
    tests 2>&1 \
    | tee -a "$OUT/pytest.log" | tail -n 40
  verdict "${PIPESTATUS[0]}" "$OUT/pytest.log"
}

stage_bench() {
  stage_start=$SECONDS
  timeout "$(left)" python3 -m fastload bench --workers "$WORKERS" --out "$OUT/bench" 2>&1 \
    | tee "$OUT/bench.log" | tail -n 30
  verdict "${PIPESTATUS[0]}" "$OUT/bench.log"
  for f in report.md results.json throughput.png; do
    [ -f "$OUT/bench/$f" ] && cp "$OUT/bench/$f" "$OUT/$f"
  done
  # the per-row logs in one file (the device tool brings back at most 8 files)
  [ -d "$OUT/bench/rows" ] && tar -czf "$OUT/bench-rows.tar.gz" -C "$OUT/bench" rows
  rm -rf "$OUT/bench"
  # the DALI pipeline alone: one batch at a time vs prefetching, the hardware JPEG decoder
  # share (hw_decoder_load), the noise field on the GPU
  echo "==== benchmarks/bench_dali.py" >>"$OUT/bench.log"
  if python3 -c "import pytest_benchmark" 2>/dev/null; then
    timeout "$(left)" python3 -m pytest -q -p no:cacheprovider benchmarks/bench_dali.py \
      --benchmark-only --benchmark-columns=min,median,mean,stddev,rounds 2>&1 \
      | tee -a "$OUT/bench.log" | tail -n 25
    verdict "${PIPESTATUS[0]}" "$OUT/bench.log"
  else  # (the profile stage's hw_decoder_load sweep does not need it)
    echo "pytest-benchmark is not installed: benchmarks/bench_dali.py skipped" | tee -a "$OUT/bench.log"
  fi
}

stage_profile() {
  stage_start=$SECONDS
  timeout "$(left)" python3 tools/profile_loader.py --device cuda --out "$OUT/profile.txt" \
    2>&1 | tail -n 40
  verdict "${PIPESTATUS[0]}" "$OUT/profile.txt"
}

stage_train() {
  stage_start=$SECONDS
  # the training loop with each loader on the GPU: the JSON lines (data wait, GPU idle) for the
  # README; TRAIN_DATA: a packed dataset (default: the script's, coco128-seg from ../shared or
  # synthetic scenes where ../shared did not travel)
  local data_arg=() l
  [ -n "${TRAIN_DATA:-}" ] && data_arg=(--data "$TRAIN_DATA")
  for l in fastload torch; do
    echo "==== tools/train_centernet.py --loader $l" >>"$OUT/train.log"
    timeout $(( $(left) / 2 )) python3 tools/train_centernet.py --loader "$l" --device cuda \
      --steps "${TRAIN_STEPS:-300}" --batch-size 32 --workers "$WORKERS" "${data_arg[@]}" \
      >>"$OUT/train.log" 2>&1
    verdict "$?" "$OUT/train.log"
    tail -n 1 "$OUT/train.log"
  done
}

env_report
case "$STAGE" in
  tests) stage_tests ;;
  bench) stage_bench ;;
  profile) stage_profile ;;
  train) stage_train ;;
  all) stage_tests; stage_bench; stage_profile; stage_train ;;
  *) echo "usage: tools/gpu_check.sh tests|bench|profile|train|all [OUT]"; exit 2 ;;
esac
ls -la "$OUT"
exit $status
