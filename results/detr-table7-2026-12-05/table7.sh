#!/usr/bin/env bash
# ECO-M2F Table 7 analog for detr_tiny: DETR (the parent at full depth) vs ECO-DETR (the gate
# at three betas), each difference with its paired 90% interval. From the repository root:
#   RUN=runs/detr_wsd DATA=val4k BETAS="0 0.0005 0.005" OUT=results/detr-table7-2026-12-05 \
#     bash results/detr-table7-2026-12-05/table7.sh
# RUN: a run whose train-parent finished (detr_tiny); DATA: the val set evaluated (default:
# the run's own); LIMIT: only the first N val images; DERIVE_LIMIT: Step B on the first N
# training images; OUT: where the compare JSONs go. Writes the run's derived.safetensors,
# gates/ and reports/ (eval_full, eval_gate_beta<b>) and OUT/table7_beta<b>.json.
set -euo pipefail
A=${ADASEG:-adaseg}
: "${RUN:?RUN=the run directory}"
OUT=${OUT:-.}
BETAS=${BETAS:-"0 0.0005 0.005"}
BOOT=${BOOT:-1000}
FLOPS=${FLOPS:-100}
METRICS=AP_box,AP50_box,AP75_box,APs_box,APm_box,APl_box,gflops_total_mean
data=(); [ -n "${DATA:-}" ] && data=(--data "$DATA")
lim=(); [ -n "${LIMIT:-}" ] && lim=(--limit "$LIMIT")
dlim=(); [ -n "${DERIVE_LIMIT:-}" ] && dlim=(--limit "$DERIVE_LIMIT")
$A derive --run "$RUN" "${dlim[@]}"
$A eval --run "$RUN" --gate none "${data[@]}" "${lim[@]}" --flops-images "$FLOPS" --name full
for b in $BETAS; do
  $A fit-gate --run "$RUN" --beta "$b"
  $A eval --run "$RUN" --gate "$RUN/gates/gate_beta${b}_K6_hard-ce.safetensors" "${data[@]}" "${lim[@]}" \
     --flops-images "$FLOPS" --name "gate_beta$b"
  $A compare "$RUN/reports/eval_full.json" "$RUN/reports/eval_gate_beta$b.json" --bootstrap "$BOOT" \
     --metrics "$METRICS" --json > "$OUT/table7_beta$b.json"
done
