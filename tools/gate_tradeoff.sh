#!/usr/bin/env bash
# Issue 24's benchmark: ECO-M2F's trade-off of one parent as curves, not a point.
#
#   fixed exits (the static curve) + the gate at several betas + the oracle gate at the same
#   betas (each val image at its best exit by its own Step B row: the bound of any gate on this
#   parent), all on the same val images, then paired differences of every gate and oracle
#   point against full depth (adaseg compare).
#
# Reuses only adaseg commands: derive (Step B on train, once), derive --split val (the oracle's
# input, never used to fit), sweep (fixed exits + gates; missing gates are fitted from Step B,
# reports reused when unchanged), eval --gate oracle --beta B, compare.
#
# The full benchmark (4000 synthetic val images, as README "The trade-off with intervals"):
#   adaseg data synth --out val4k --n-train 0 --n-val 4000
#   RUN=runs/default DATA=val4k FLOPS=500 tools/gate_tradeoff.sh
# Small scale (what the README reports as measured):
#   RUN=/tmp/i24 LIMIT=48 BOOT=200 tools/gate_tradeoff.sh
#
# Environment: PYTHON (a python with matplotlib, for the plot; default python3), RUN (run directory with a parent; default runs/default), DATA (a --data spec
# for the val images, empty: the run's own), LIMIT (first N val images, empty: all), FLOPS
# (--flops-images, empty: all evaluated), BETAS (comma list; default spans small to large
# savings on the default parent), EXITS (sweep --exits, default all), BOOT (bootstrap
# resamples, default 1000), NAME (sweep name, default tradeoff), THREADS (default 1),
# ADASEG (the adaseg command). images/s of these evals are only comparable when measured on a
# quiet machine; on a shared CPU read the GFLOPs, not the images/s.
set -euo pipefail

RUN=${RUN:-runs/default}
DATA=${DATA:-}
LIMIT=${LIMIT:-}
FLOPS=${FLOPS:-}
BETAS=${BETAS:-0.0005,0.002,0.005,0.01,0.02,0.05}
EXITS=${EXITS:-all}
BOOT=${BOOT:-1000}
NAME=${NAME:-tradeoff}
THREADS=${THREADS:-1}
ADASEG=${ADASEG:-adaseg}

data_args=()
[[ -n "$DATA" ]] && data_args+=(--data "$DATA")
limit_args=()
[[ -n "$LIMIT" ]] && limit_args+=(--limit "$LIMIT")
flops_args=()
[[ -n "$FLOPS" ]] && flops_args+=(--flops-images "$FLOPS")

# Step B on the training images (what the gates are fitted on), once.
if [[ ! -f "$RUN/derived.safetensors" ]]; then
  $ADASEG derive --run "$RUN" --threads "$THREADS" --quiet
fi
# Step B on the val images: the oracle's input (evaluation only), the same images as the evals.
$ADASEG derive --split val --run "$RUN" "${data_args[@]}" "${limit_args[@]}" --threads "$THREADS" --quiet

# Fixed exits and the gate at every beta (gates fitted from the training Step B when missing).
$ADASEG sweep --run "$RUN" "${data_args[@]}" "${limit_args[@]}" "${flops_args[@]}" --exits "$EXITS" \
  --betas "$BETAS" --bootstrap "$BOOT" --threads "$THREADS" --name "$NAME" --quiet

# The oracle at the same betas.
oracles=()
IFS=',' read -r -a betas <<< "$BETAS"
for b in "${betas[@]}"; do
  name=$($ADASEG eval --gate oracle --beta "$b" --run "$RUN" "${data_args[@]}" "${limit_args[@]}" \
         "${flops_args[@]}" --threads "$THREADS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["settings"]["name"])')
  oracles+=("$RUN/reports/eval_$name.json")
done

# Full depth and the gates from the sweep, then every point against full depth, paired.
mapfile -t swept < <(python3 - "$RUN/sweeps/$NAME/sweep.json" "$RUN" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
full = [r["report"] for r in rows if r["kind"] == "full"]
gates = [r["report"] for r in rows if r["kind"] == "gate"]
root = sys.argv[2]
exits = [r["report"] for r in rows if r["kind"] == "exit"]
print("\n".join(f"{root}/{p}" for p in full + exits + gates))
EOF
)
$ADASEG compare --bootstrap "$BOOT" "${swept[@]}" "${oracles[@]}" --metrics PQ
PYTHON=${PYTHON:-python3}
$PYTHON "$(dirname "$0")/gate_tradeoff_plot.py" "$RUN/sweeps/$NAME/sweep.json" "${oracles[@]}" \
  --out "$RUN/sweeps/$NAME/gate_oracle.png"
echo "sweep (plots, fronts, the gates' advantage over the fixed-exit curve): $RUN/sweeps/$NAME/"
