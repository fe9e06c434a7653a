#!/usr/bin/env bash
# The early-exit table of ECO-DETR: standard training (pause) vs WSD (wsd+pause) at each exit,
# paired over the same val images. From the repository root:
#   STD=runs/detr_std WSD=runs/detr_wsd DATA=val4k LIMIT=1000 OUT=results/detr-table7-2026-12-05 \
#     bash results/detr-table7-2026-12-05/exits.sh
# Evaluates each parent at fixed exits 2..5 and full depth (no gate, no pausing) into
# $EV/<std|wsd>_<K>/ (default $OUT/ev) and writes $OUT/exits_<K>.json (compare --across-parents). A report
# already there is kept; ONLY=std (or wsd) evaluates that parent alone and compares nothing.
set -euo pipefail
A=${ADASEG:-adaseg}
: "${STD:?STD=the standard run}" "${WSD:?WSD=the WSD run}"
OUT=${OUT:-.}
EV=${EV:-$OUT/ev}  # the eval reports (~2 MB each with their per-image parts)
BOOT=${BOOT:-1000}
data=(); [ -n "${DATA:-}" ] && data=(--data "$DATA")
lim=(); [ -n "${LIMIT:-}" ] && lim=(--limit "$LIMIT")
for k in 2 3 4 5 full; do
  ex=(); [ "$k" != full ] && ex=(--exit "$k")
  for p in std wsd; do
    run=$STD; [ $p = wsd ] && run=$WSD
    [ -f "$EV/${p}_$k/reports/eval_exit_$k.json" ] && continue  # made by an earlier call
    [ -n "${ONLY:-}" ] && [ "$ONLY" != $p ] && continue  # ONLY=std: evaluate that parent alone
    $A eval --parent "$run/checkpoints/parent.safetensors" --out "$EV/${p}_$k" --gate none "${ex[@]}" \
       "${data[@]}" "${lim[@]}" --flops-images 20 --warmup 0 --timed 1 --name "exit_$k" -q
  done
  [ -n "${ONLY:-}" ] && continue
  $A compare --across-parents --bootstrap "$BOOT" --metrics AP_box,AP50_box --json \
     "$EV/std_$k/reports/eval_exit_$k.json" "$EV/wsd_$k/reports/eval_exit_$k.json" > "$OUT/exits_$k.json"
done
