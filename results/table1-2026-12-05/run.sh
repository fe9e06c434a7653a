#!/usr/bin/env bash
# Issue 21's Table 1 analog (built-in data, CPU): M2F, ECO-M2F, Lite-M2F, Lite-ECO-M2F, RT-M2F.
# Every parent: 500 iterations (the demo's budget) from the shipped m2f_tiny base, one thread.
#   M2F:  adaseg train-parent --run $R/m2f500 --threads 1      (the default recipe, wsd+pause: the
#         default parent of issue 24's benchmark, /work/runs24/default)
#   Lite: its 6 deformable layers mapped one to one onto Lite's (layers 1-5 -> high_layers,
#         6 -> all_layer), every other weight as is; the default recipe (wsd+pause) trains
#         Lite-ECO-M2F's exits 2..5, each followed by the kept layer 6
#   RT:   every weight outside the encoder from the base, the encoder fresh; --recipe standard
#         (RT-M2F is a baseline: no ECO row, and it refuses pausing)
# Evaluation: the first 2000 images of `adaseg data synth --out val4k --n-train 0 --n-val 4000`,
# encoder/total GFLOPs counted on the first 100 (fixed-depth models: the same for every image).
set -euo pipefail
A=${ADASEG:-adaseg}
R=${R:-runs}
M2F=${M2F:-$R/m2f500}
BASE=adaseg/assets/m2f_tiny_synthetic_base.safetensors
E=(--data val4k --limit 2000 --flops-images 100 --threads 1)
[ -f "$M2F/checkpoints/parent.safetensors" ] || $A train-parent --run "$M2F" --threads 1
[ -f "$R/lite500/checkpoints/parent.safetensors" ] || $A train-parent --model m2f_lite_tiny --init $BASE \
  --init-encoder deform --iters 500 --threads 1 --run "$R/lite500"
[ -f "$R/rt500/checkpoints/parent.safetensors" ] || $A train-parent --model m2f_rt_tiny --recipe standard --init $BASE \
  --init-encoder deform --iters 500 --threads 1 --run "$R/rt500"
for r in "$M2F" "$R/lite500"; do
  [ -f "$r/derived.safetensors" ] || $A derive --run "$r" --threads 1
  [ -f "$r/gates/gate_beta0.0005_K6_hard-ce.safetensors" ] || $A fit-gate --run "$r" --beta 0.0005
  $A eval --run "$r" --gate none "${E[@]}"
  $A eval --run "$r" --gate "$r/gates/gate_beta0.0005_K6_hard-ce.safetensors" "${E[@]}"
  $A compare --bootstrap 1000 --metrics PQ,mIoU,AP "$r/reports/eval_full_limit2000_flops100_data-val4k.json" \
    "$r/reports/eval_gate_beta0.0005_K6_hard-ce_limit2000_flops100_data-val4k.json"
done
$A eval --run "$R/rt500" --gate none "${E[@]}"
# across kinds (different parents, the same images): each full-depth model against M2F's
$A compare --across-parents --bootstrap 1000 --metrics PQ,mIoU,AP "$M2F/reports/eval_full_limit2000_flops100_data-val4k.json" \
  "$R/lite500/reports/eval_full_limit2000_flops100_data-val4k.json" "$R/rt500/reports/eval_full_limit2000_flops100_data-val4k.json"
