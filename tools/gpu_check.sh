#!/usr/bin/env bash
# The whole GPU check in one script, for a machine with an NVIDIA GPU (the project's GPU machine
# is one H100, 16 cores, CUDA 13, torch 2.11):
#
#   tools/gpu_check.sh STAGE [OUT]      STAGE: tests | bench | profile | all     OUT: log folder
#
#   tests    the whole test suite (GPU tests included; the skips are listed), then torchrun with
#            two processes on the one GPU (disjoint shares, no stray CUDA context)
#   bench    fastload bench --workers $WORKERS (default: all cores) -> OUT/report.md,
#            OUT/results.json, OUT/throughput.png (commit them under docs/bench_gpu/)
#   profile  where the time of a fastload-gpu batch goes (torch profiler) -> OUT/profile.txt
#
# Missing Python packages (DALI, lmdb, simplejpeg, albumentations on the project's GPU machine)
# come as wheels carried in parts .dw0 .. .dwN (../shared/tools/device-wheels.sh makes them);
# when .dw0/install.sh is here it is run first. Everything goes under OUT, at most 8 files, so
# that the device tool brings all of it back. Exit status: non-zero when a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-all}
OUT=${2:-${OUT:-gpu-check-out}}
WORKERS=${WORKERS:-$(nproc)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -f .dw0/install.sh ] && [ ! -f /tmp/site/.fastload-installed ]; then
  bash .dw0/install.sh >"$OUT/install.log" 2>&1 && touch /tmp/site/.fastload-installed \
    || { echo "wheel install failed (see $OUT/install.log)"; exit 1; }
fi
[ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"
status=0

env_report() {
  {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    nproc
    python3 - <<'EOF'
import importlib
for m in ("torch", "nvidia.dali", "numba", "numpy", "lmdb", "simplejpeg", "albumentations", "cv2"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", type(e).__name__, e)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
  } >"$OUT/env.txt" 2>&1
}

stage_tests() {
  python3 -m pytest -q -rs -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest.log" | tail -n 40
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  # two processes on the one GPU: disjoint shares, each on cuda:0, no context elsewhere
  python3 -m pytest -q -rs -p no:cacheprovider -k "torchrun or distributed" tests/loader 2>&1 \
    | tee "$OUT/torchrun.log" | tail -n 5
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

stage_bench() {
  python3 -m fastload bench --workers "$WORKERS" --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log" | tail -n 30
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  for f in report.md results.json throughput.png; do
    [ -f "$OUT/bench/$f" ] && cp "$OUT/bench/$f" "$OUT/$f"
  done
  # the per-row logs in one file (the device tool brings back at most 8 files)
  [ -d "$OUT/bench/rows" ] && tar -czf "$OUT/bench-rows.tar.gz" -C "$OUT/bench" rows
  rm -rf "$OUT/bench"
}

stage_profile() {
  python3 tools/profile_loader.py --device cuda --out "$OUT/profile.txt" 2>&1 | tail -n 40
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

env_report
case "$STAGE" in
  tests) stage_tests ;;
  bench) stage_bench ;;
  profile) stage_profile ;;
  all) stage_tests; stage_bench; stage_profile ;;
  *) echo "usage: tools/gpu_check.sh tests|bench|profile|all [OUT]"; exit 2 ;;
esac
ls -la "$OUT"
exit $status
