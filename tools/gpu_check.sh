#!/usr/bin/env bash
# tools/gpu_check.sh [OUT_DIR]: everything in adaseg that only an NVIDIA GPU can check, in one go.
#
#   build      pip install --no-build-isolation -e . (CUDA kernels for the visible GPU)
#   doctor     adaseg doctor --json + tests/install/cuda_kernels_check.py (dispatcher CUDA kernels)
#   tests      the CUDA tests (deformable attention vs reference, compiled Triton kernels vs
#              reference, criterion, throughput) and the Triton tests natively (TRITON_INTERPRET=0)
#   bench-op   adaseg bench op --device cuda --dtype bf16 (reference vs extension)
#   bench-pause adaseg bench pause (unfused PyTorch vs Triton, entropy kernel bandwidth)
#   train      adaseg train-parent --amp on the GPU, m2f_tiny, short
#   eval       adaseg eval on the GPU (full depth, pausing 3:0.4,5:0.3)
#
# Run from the repository root with the venv whose torch is a CUDA build (PYTHON, default
# .venv/bin/python). Writes OUT_DIR (default runs/gpu_check-<UTC time>)/gpu_check.log (all
# output) and gpu_check.json (per step: command, exit status, seconds, and the benches' JSON).
# Every step has a hard time limit (below); the limits add up to 590 s, so the whole script
# ends within 10 minutes on any machine. Exit status: 0 when every step passed, 1 when one
# failed, 2 when no GPU is visible (checked first: nothing runs then).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-runs/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)}

if ! [ -x "$PY" ]; then
  echo "tools/gpu_check.sh: no Python at $PY (set PYTHON to the venv's python with a CUDA torch)" >&2; exit 2
fi
if ! why=$("$PY" -c '
import sys, torch
if torch.version.cuda is None: sys.exit(f"torch {torch.__version__} is a CPU build")
if not torch.cuda.is_available(): sys.exit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
print(torch.cuda.get_device_name(0))' 2>&1); then
  echo "tools/gpu_check.sh: no CUDA GPU: ${why##*$'\n'}; this script needs one (nothing was run)" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
STEPS="$OUT/steps.jsonl"
: > "$LOG"; : > "$STEPS"
ADASEG="$(dirname "$PY")/adaseg"
echo "gpu_check: $why; writing $OUT" | tee -a "$LOG"
failed=0

# run NAME LIMIT_S CMD...: one step, output appended to the log, a JSON line recorded.
run() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS rc
  echo "== [$name] (limit ${limit} s) $*" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  local secs=$((SECONDS - start))
  echo "== [$name] exit $rc in ${secs} s$([ $rc -eq 124 ] && echo ' (TIME LIMIT)')" | tee -a "$LOG"
  [ $rc -eq 0 ] || failed=1
  "$PY" -c 'import json, sys; print(json.dumps({"step": sys.argv[1], "command": sys.argv[2], "exit": int(sys.argv[3]), "seconds": int(sys.argv[4])}))' \
    "$name" "$*" "$rc" "$secs" >> "$STEPS"
}

# Hard limits in seconds (sum 590 s, under 10 min), from the first run on an H200 (16 cores,
# torch 2.11 + CUDA 13.0, Triton 3.6; results/gpu/2026-11-29-h200.md) where the earlier
# limits were too tight for three steps:
#  build 60: measured 47 s (CPU kernels + nvcc for sm_90 only).
#  doctor 20: measured 14 s.
#  tests 200: the 19 deformable-attention CUDA tests and the interpreter check passed within
#    ~50 s; pausing_cuda_check.py at the paper's shapes (autotuning 6 entropy configs) was
#    still running when the old 150 s limit hit; the 72 GPU contract cases took 29 s alone.
#  triton-native 160: 18 of its 72 tests passed in 45 s (each a first-call JIT compile).
#  bench-op 20 / bench-pause 30: measured 9 s / 19 s.
#  train 70: 20 iterations of m2f_tiny with --amp; 25 iterations plus generating the
#    synthetic set (first use) took 46 s there.
#  eval 30: 50 val images; two such evals ran in under 25 s each.
# (adaseg bench m2f is a CPU benchmark; it is no longer run here.)
run build 60 "$PY" -m pip install -q --no-build-isolation --no-deps -e .
run doctor 20 bash -c "'$ADASEG' doctor --json > '$OUT/doctor.json' && '$PY' tests/install/cuda_kernels_check.py"
run tests 200 env TRITON_INTERPRET=0 "$PY" -m pytest -q -x -rs tests/ops/test_ms_deform_attn_cuda.py tests/ops/test_pausing_cuda.py \
  tests/models/test_mask2former_criterion.py tests/eval/test_throughput.py tests/models/test_adaptive_contract.py \
  -k "cuda or gpu or CUDA or GPU"
run triton-native 160 env TRITON_INTERPRET=0 "$PY" -m pytest -q -x tests/ops/test_pausing_triton.py
run bench-op 20 "$ADASEG" bench op --device cuda --dtype bf16 --repeats 5 --json "$OUT/bench_op.json"
run bench-pause 30 "$ADASEG" bench pause --json "$OUT/bench_pause.json"
run train 70 "$ADASEG" train-parent --amp --device cuda --iters 20 --run "$OUT/run" --quiet
run eval 30 "$ADASEG" eval --device cuda --gate none --pause 3:0.4,5:0.3 --limit 50 --run "$OUT/run" --quiet

# One JSON with every step and the benches' own figures.
"$PY" - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
steps = [json.loads(line) for line in open(os.path.join(out, "steps.jsonl"))]
figures = {}
for name in ("doctor", "bench_op", "bench_pause"):
    path = os.path.join(out, name + ".json")
    if os.path.isfile(path):
        with open(path) as f:
            figures[name] = json.load(f)
reports = os.path.join(out, "run", "reports")
if os.path.isdir(reports):
    for name in sorted(os.listdir(reports)):
        with open(os.path.join(reports, name)) as f:
            figures["eval/" + name] = json.load(f)
result = {"passed": all(s["exit"] == 0 for s in steps), "seconds": sum(s["seconds"] for s in steps),
          "steps": steps, "figures": figures}
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(result, f, indent=2)
print(f"gpu_check: {'PASSED' if result['passed'] else 'FAILED'} in {result['seconds']} s; "
      f"{os.path.join(out, 'gpu_check.json')}, {os.path.join(out, 'gpu_check.log')}")
EOF
exit $failed
