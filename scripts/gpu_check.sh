#!/usr/bin/env bash
# jaxft on a GPU in one go, about 5 minutes on an H200: the equivalence tests against PyTorch with
# JAX on the GPU at full float32 precision, then the training-step and batched-grid benchmarks.
# Every figure goes to one file, ${OUT:-.}/gpu_check_results.txt; stderr (JAX/XLA chatter,
# tracebacks) to gpu_check_log.txt beside it, and a failing stage's last lines to the results.
#
#   bash scripts/gpu_check.sh                  # needs the [torch,test,cuda] extras installed
#   PYTHON=/path/to/python OUT=/tmp/check GPU_CHECK_BUDGET_S=540 bash scripts/gpu_check.sh
#
# Exit status 0 when every stage passed; 1 otherwise (or without a GPU), after all stages ran.
set -uo pipefail  # no -e: a failing stage is recorded and the next one still runs

cd "$(dirname "$0")/.." || exit 1
OUT_DIR=${OUT:-.}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/gpu_check_results.txt"
LOG="$OUT_DIR/gpu_check_log.txt"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
# Stages are cut to fit one command of at most 10 minutes, whatever the GPU.
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET_S:-540}))
FAILED=()
: >"$RESULTS"
: >"$LOG"

note() { echo "$*" | tee -a "$RESULTS"; }

# stage NAME LIMIT_S COMMAND...: stdout to the results, stderr to the log; at most LIMIT_S seconds
# and never past the deadline.
stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - SECONDS))
  note ""
  note "=== $name: $*"
  if [ "$left" -lt 30 ]; then
    note "--- $name: skipped, the time budget is spent (GPU_CHECK_BUDGET_S)"
    FAILED+=("$name (skipped)")
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  local errors start=$SECONDS status
  errors=$(mktemp)
  timeout -k 10 "$limit" "$@" 2>"$errors" | tee -a "$RESULTS"
  status=${PIPESTATUS[0]}
  { echo "=== $name"; cat "$errors"; } >>"$LOG"
  if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && note "--- $name: stopped after its limit of $limit s"
    note "--- last lines of stderr:"
    tail -n 30 "$errors" | tee -a "$RESULTS"
    FAILED+=("$name")
  fi
  rm -f "$errors"
  note "--- $name: exit $status after $((SECONDS - start)) s"
}

# The flag that puts a benchmark on the accelerator, read from its --help (the scripts differ).
device_flag() {
  local help
  help=$("$PY" "$1" --help 2>/dev/null) || return 0
  case "$help" in
    *"{cpu,gpu}"*) echo "--device gpu" ;;
    *"{cpu,default}"*) echo "--device default" ;;
  esac
}

# The flag that appends a benchmark's JSON record to the results, if it takes one.
output_flag() {
  "$PY" "$1" --help 2>/dev/null | grep -q -- "--output" && echo "--output $OUT_DIR/gpu_check_bench.jsonl"
}

note "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>>"$LOG" | tee -a "$RESULTS"
# JAX and torch share the GPU (the benchmark runs both): no preallocation of 75% of its memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if ! "$PY" - 2>>"$LOG" <<'EOF' | tee -a "$RESULTS"; then
import torch  # before jax/tensorflow, as everywhere in jaxft
import jax
print(f"jax {jax.__version__} on {jax.default_backend()}: {jax.devices()}")
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
raise SystemExit(0 if jax.default_backend() == "gpu" else 1)
EOF
  note "error: JAX sees no GPU. Install the CUDA build: $PY -m pip install -e '.[torch,test,cuda]'"
  exit 1
fi

# 1. Equivalence with PyTorch, JAX on the GPU. Full float32: no TF32 in cuBLAS/cuDNN (torch's own
# TF32 switches are off in tests/test_models.py) and XLA's highest matmul/conv precision.
TESTS=()
for file in tests/test_models.py tests/test_parity.py tests/test_bfloat16.py; do
  [ -f "$file" ] && TESTS+=("$file")
done
note ""
note "equivalence tests with NVIDIA_TF32_OVERRIDE=0 JAX_DEFAULT_MATMUL_PRECISION=highest"
stage "equivalence tests" 300 env NVIDIA_TF32_OVERRIDE=0 JAX_DEFAULT_MATMUL_PRECISION=highest \
  "$PY" -m pytest -p no:cacheprovider -q -s -rfE "${TESTS[@]}"

# 2. Benchmarks at each framework's default precision (TF32 where it uses it), as users run them.
if [ -f scripts/bench_train.py ]; then
  for model in resnet50 efficientnet_lite0; do
    # shellcheck disable=SC2046 # the flags are words on purpose
    stage "bench_train $model" 120 "$PY" scripts/bench_train.py --model "$model" \
      --image-size 224 --batch-size 128 --steps 20 $(device_flag scripts/bench_train.py) \
      $(output_flag scripts/bench_train.py)
  done
else
  note ""
  note "scripts/bench_train.py not found: training-step benchmark skipped"
fi
if [ -f scripts/bench_grid.py ]; then
  # shellcheck disable=SC2046
  stage "bench_grid" 150 "$PY" scripts/bench_grid.py --model resnet18 --image-size 112 \
    --batch-size 64 --points 8 --steps 20 $(device_flag scripts/bench_grid.py) \
    $(output_flag scripts/bench_grid.py)
else
  note ""
  note "scripts/bench_grid.py not found: batched-grid benchmark skipped"
fi

note ""
if [ "${#FAILED[@]}" -eq 0 ]; then
  note "gpu_check: every stage passed; results in $RESULTS"
  exit 0
fi
note "gpu_check: failed: ${FAILED[*]}; results in $RESULTS, stderr in $LOG"
exit 1
