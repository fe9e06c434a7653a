#!/usr/bin/env bash
# tools/gpu_pause_speed.sh [OUT_DIR]: issue 23's GPU check, one go, at most 8 minutes.
#
#   build        pip install --no-build-isolation -e . only when the dispatcher lacks the CUDA
#                ms_deform_attn kernel (Mask2Former's encoder would otherwise run the reference)
#   doctor       adaseg doctor --json (the lean stage's entropy backend measured per paper shape)
#   tests        the device-sync test (set_sync_debug_mode("error") around the encoder loop), the
#                CUDA-graph equality tests and the lean-stage tests, natively (TRITON_INTERPRET=0)
#   bench-pause  adaseg bench pause: one stage, registered ops vs lean, host / device (graph) /
#                eager us at the paper shapes, batch 32 (Mask2Former 2), then batch 1
#   model-*      adaseg bench model: encoder and whole-model images/s, arms none / reference /
#                lean / graph / exits / exits-graph, bf16, inference_mode, with speed-up, FLOP ideal
#                and realisation: Segmenter ViT-Ti at 512 (N=1024), ViT-S at 768 (N=2304), batch
#                1 and 32; Mask2Former Swin-T at 1024 (COCO size, N=21504), batch 1 and 8
#                (32 does not fit the time budget)
#
# Run from the repository root with a Python whose torch is a CUDA build (PYTHON, default
# .venv/bin/python). Writes OUT_DIR (default runs/gpu_pause_speed-<UTC time>)/run.log, steps.jsonl
# (per step: command, exit status, seconds) and each bench's JSON. Each step has a hard time
# limit; the limits add up to 480 s. Exit status: 0 when every step passed, 1 when one failed,
# 2 when no GPU is visible (nothing runs then).
#
# DRY_RUN=1: the same steps on the CPU at tiny sizes (checks the script and every command line;
# measures nothing worth reading; the graph arms and GPU tests are skipped there).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-runs/gpu_pause_speed-$(date -u +%Y%m%dT%H%M%SZ)}
DRY=${DRY_RUN:-0}

if ! [ -x "$PY" ] && ! command -v "$PY" > /dev/null; then
  echo "tools/gpu_pause_speed.sh: no Python at $PY (set PYTHON to a python with a CUDA torch)" >&2; exit 2
fi
if [ "$DRY" = 1 ]; then
  why="DRY RUN on the CPU"
elif ! why=$("$PY" -c '
import sys, torch
if torch.version.cuda is None: sys.exit(f"torch {torch.__version__} is a CPU build")
if not torch.cuda.is_available(): sys.exit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
print(torch.cuda.get_device_name(0))' 2>&1); then
  echo "tools/gpu_pause_speed.sh: no CUDA GPU: ${why##*$'\n'}; this script needs one (nothing was run; DRY_RUN=1 checks it on a CPU)" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/run.log"
STEPS="$OUT/steps.jsonl"
: > "$LOG"; : > "$STEPS"
ADASEG=("$PY" -m adaseg)
echo "gpu_pause_speed: $why; writing $OUT" | tee -a "$LOG"
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

if [ "$DRY" = 1 ]; then
  DEV=cpu; PAUSE_ARGS=(--case vit-ti/ade20k-512 --repeats 2 --cpu-batch 1)
  VIT_TI=(--model segmenter_tiny --size 64 --batch 1); VIT_S=(--model segmenter_tiny --size 64 --batch 2)
  M2F=(--model m2f_tiny --size 64 --batch 1); ROUNDS=(--repeats 1 --warmup 0 --threads 1)
  TEST_ENV=()
else
  DEV=cuda; PAUSE_ARGS=(--repeats 50)
  VIT_TI=(--model segmenter_vit_ti --size 512 --batch 1,32); VIT_S=(--model segmenter_vit_s --size 768 --batch 1,32)
  M2F=(--model m2f_swin_t --size 1024 --batch 1,8); ROUNDS=(--repeats 10 --warmup 2)
  TEST_ENV=(env TRITON_INTERPRET=0)
fi

# Hard limits in seconds (sum 480 s = 8 min). Written without a GPU: the bench limits are
# estimates (a ViT-S forward at 768, batch 32, bf16 is ~0.1 s on an H100; 6 arms x 12 rounds
# x 2 scopes x 2 batches); a step cut by its limit still leaves the ones before in the log.
if [ "$DRY" != 1 ] && ! "$PY" -c 'import sys, adaseg.ops._extension as e, torch
sys.exit(0 if torch._C._dispatch_has_kernel_for_dispatch_key("adaseg::ms_deform_attn", "CUDA") else 1)' 2>/dev/null; then
  run build 60 "$PY" -m pip install --no-build-isolation --no-deps -e .
fi
run doctor 45 "${ADASEG[@]}" doctor --json
run tests 75 "${TEST_ENV[@]}" "$PY" -m pytest -q -rs -p no:cacheprovider tests/models/test_host_syncs.py \
  tests/models/test_cuda_graph.py tests/ops/test_pause_stage.py
run bench-pause 60 "${ADASEG[@]}" bench pause "${PAUSE_ARGS[@]}" --json "$OUT/bench_pause.json"
run bench-pause-b1 30 "${ADASEG[@]}" bench pause "${PAUSE_ARGS[@]}" --batch 1 --json "$OUT/bench_pause_b1.json"
run model-vit-ti-512 55 "${ADASEG[@]}" bench model "${VIT_TI[@]}" "${ROUNDS[@]}" --device "$DEV" \
  --json "$OUT/bench_model_vit_ti_512.json"
run model-vit-s-768 70 "${ADASEG[@]}" bench model "${VIT_S[@]}" "${ROUNDS[@]}" --device "$DEV" \
  --json "$OUT/bench_model_vit_s_768.json"
run model-m2f-coco 85 "${ADASEG[@]}" bench model "${M2F[@]}" "${ROUNDS[@]}" --device "$DEV" \
  --json "$OUT/bench_model_m2f_coco.json"

echo "gpu_pause_speed: $([ $failed -eq 0 ] && echo 'every step passed' || echo 'a step FAILED (see steps.jsonl)'); $OUT" | tee -a "$LOG"
exit $failed
