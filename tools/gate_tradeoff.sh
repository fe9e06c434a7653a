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
# The benchmark README "ECO-M2F's trade-off as curves" reports (all 4000 images of the synthetic
# val set; LIMIT=2000 gave its earlier, first-2000-images run):
#   adaseg data synth --out val4k --n-train 0 --n-val 4000
#   RUN=runs/default DATA=val4k FLOPS=100 EXITS=2,3,4,5 SWEEP_BOOT=100 METRICS=PQ,mIoU \
#     NAME=val4k-tradeoff-4000 tools/gate_tradeoff.sh
# Small scale:
#   RUN=/tmp/i24 LIMIT=48 BOOT=200 tools/gate_tradeoff.sh
#
# Environment: PYTHON (a python with matplotlib, for the plot; default python3), RUN (run
# directory with a parent; default runs/default), DATA (a --data spec for the val images,
# empty: the run's own), LIMIT (first N val images, empty: all), FLOPS (--flops-images, empty:
# all evaluated; fixed exits' GFLOPs do not depend on the image at one size, the gates' and the
# oracle's means do: the plot script also prints the saving from the mean exit over all
# images), BETAS (comma list; default 0,0.0005,0.001,0.002,0.005: ~9% to ~50% encoder saving
# on the default parent by fit-gate's training-set estimate; check the sweep's savings on
# another parent),
# EXITS (sweep --exits, default all), BOOT (resamples of compare's paired differences, default
# 1000), SWEEP_BOOT (resamples of the sweep's point intervals and adaptive advantages, default
# BOOT; the point intervals recompute AP, which dominates the cost at thousands of images),
# METRICS (compare --metrics, default PQ), NAME (sweep name, default tradeoff), FEATURES (the
# gates' inputs, comma list of backbone,exit2, default both: the exit-2 gates are a second
# sweep NAME-exit2 whose fixed exits are the first's reports, compared with full depth and,
# at equal encoder GFLOPs, with the backbone gate curve by tools/gate_vs_gate.py), THREADS
# (default 1), ADASEG (the adaseg command), STEPS (comma list of derive,sweep,oracle,compare,
# plot; default all, in that order: e.g. STEPS=sweep and STEPS=derive,oracle in two shells,
# then STEPS=compare,plot; without the oracle step the oracle reports of these betas and
# images are looked up in RUN/reports). compare's output is also written to
# RUN/sweeps/NAME/compare_vs_full.txt. images/s of these evals are only comparable when
# measured on a quiet machine; on a shared CPU read the GFLOPs, not the images/s.
set -euo pipefail

RUN=${RUN:-runs/default}
DATA=${DATA:-}
LIMIT=${LIMIT:-}
FLOPS=${FLOPS:-}
BETAS=${BETAS:-0,0.0005,0.001,0.002,0.005}
EXITS=${EXITS:-all}
BOOT=${BOOT:-1000}
SWEEP_BOOT=${SWEEP_BOOT:-$BOOT}
METRICS=${METRICS:-PQ}
NAME=${NAME:-tradeoff}
FEATURES=${FEATURES:-backbone,exit2}
THREADS=${THREADS:-1}
ADASEG=${ADASEG:-adaseg}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-derive,sweep,oracle,compare,plot}

for s in ${STEPS//,/ }; do
  case "$s" in derive|sweep|oracle|compare|plot) ;;
    *) echo "Error: STEPS: unknown step '$s' (derive, sweep, oracle, compare, plot)" >&2; exit 2 ;;
  esac
done
step() { [[ ",$STEPS," == *",$1,"* ]]; }
for f in ${FEATURES//,/ }; do
  case "$f" in backbone|exit2) ;;
    *) echo "Error: FEATURES: unknown gate input '$f' (backbone, exit2)" >&2; exit 2 ;;
  esac
done
feature() { [[ ",$FEATURES," == *",$1,"* ]]; }
exit2_name="$NAME-exit2"

data_args=()
[[ -n "$DATA" ]] && data_args+=(--data "$DATA")
limit_args=()
[[ -n "$LIMIT" ]] && limit_args+=(--limit "$LIMIT")
flops_args=()
[[ -n "$FLOPS" ]] && flops_args+=(--flops-images "$FLOPS")
IFS=',' read -r -a betas <<< "$BETAS"
sweep_json="$RUN/sweeps/$NAME/sweep.json"

if step derive; then
  # Step B on the training images (what the gates are fitted on), once.
  if [[ ! -f "$RUN/derived.safetensors" ]]; then
    $ADASEG derive --run "$RUN" --threads "$THREADS" --quiet
  fi
  # Step B on the val images: the oracle's input (evaluation only), the same images as the evals.
  $ADASEG derive --split val --run "$RUN" "${data_args[@]}" "${limit_args[@]}" --threads "$THREADS" --quiet
fi

if step sweep; then
  # Fixed exits and the gate at every beta (gates fitted from the training Step B when missing);
  # the exit-2 gates' sweep reuses the fixed exits' reports (same images and settings).
  if feature backbone; then
    $ADASEG sweep --run "$RUN" "${data_args[@]}" "${limit_args[@]}" "${flops_args[@]}" --exits "$EXITS" \
      --betas "$BETAS" --bootstrap "$SWEEP_BOOT" --threads "$THREADS" --name "$NAME" --quiet
  fi
  if feature exit2; then
    $ADASEG sweep --run "$RUN" "${data_args[@]}" "${limit_args[@]}" "${flops_args[@]}" --exits "$EXITS" \
      --betas "$BETAS" --features exit2 --bootstrap "$SWEEP_BOOT" --threads "$THREADS" --name "$exit2_name" --quiet
  fi
fi
feature backbone || sweep_json="$RUN/sweeps/$exit2_name/sweep.json"
exit2_json="$RUN/sweeps/$exit2_name/sweep.json"

# The oracle at the same betas: evaluated (step oracle) or looked up.
oracles=()
if step oracle; then
  for b in "${betas[@]}"; do
    name=$($ADASEG eval --gate oracle --beta "$b" --run "$RUN" "${data_args[@]}" "${limit_args[@]}" \
           "${flops_args[@]}" --threads "$THREADS" --json | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["settings"]["name"])')
    oracles+=("$RUN/reports/eval_$name.json")
  done
elif step compare || step plot; then
  # The oracle report of each beta made with the sweep's images and settings (those of the
  # sweep's full-depth report: limit, FLOP count, data, no pausing, the same parent).
  found=$($PYTHON - "$sweep_json" "$RUN" "$BETAS" <<'EOF'
import json, sys
from pathlib import Path
rows = json.load(open(sys.argv[1]))["rows"]
root = Path(sys.argv[2])
full = json.loads((root / [r["report"] for r in rows if r["kind"] == "full"][0]).read_text())
same = ("limit", "requested_flops_images", "data", "pause", "pause_mode", "batch_size", "seed")
for b in sys.argv[3].split(","):
    hits = []
    for p in sorted((root / "reports").glob("eval_oracle_beta*.json")):
        rep = json.loads(p.read_text())
        s = rep["settings"]
        if (s.get("oracle_beta") == float(b) and p.name == f"eval_{s['name']}.json"
                and all(s.get(k) == full["settings"].get(k) for k in same)
                and rep["info"].get("parent_content_sha256") == full["info"].get("parent_content_sha256")):
            hits.append(p)
    if len(hits) != 1:
        sys.exit(f"Error: {len(hits)} oracle reports for beta {b} made like the sweep's full depth in "
                 f"{root}/reports (run the oracle step)")
    print(hits[0])
EOF
)
  mapfile -t oracles <<< "$found"
fi

if step compare; then
  # Full depth, the fixed exits and the gates from the sweep, then every point against full
  # depth, paired.
  more=()
  feature exit2 && feature backbone && more=("$exit2_json")
  mapfile -t swept < <($PYTHON - "$RUN" "$sweep_json" "${more[@]}" <<'EOF'
import json, sys
root = sys.argv[1]
rows = json.load(open(sys.argv[2]))["rows"]
full = [r["report"] for r in rows if r["kind"] == "full"]
gates = [r["report"] for r in rows if r["kind"] == "gate"]
exits = [r["report"] for r in rows if r["kind"] == "exit"]
for other in sys.argv[3:]:  # the exit-2 gates' sweep: its gates only (its fixed exits are the same reports)
    gates += [r["report"] for r in json.load(open(other))["rows"] if r["kind"] == "gate"]
print("\n".join(f"{root}/{p}" for p in full + exits + gates))
EOF
)
  $ADASEG compare --bootstrap "$BOOT" "${swept[@]}" "${oracles[@]}" --metrics "$METRICS" \
    | tee "$(dirname "$sweep_json")/compare_vs_full.txt"
  if feature exit2 && feature backbone; then
    # the exit-2 gates against the backbone gates' curve at equal encoder GFLOPs, paired
    $PYTHON "$(dirname "$0")/gate_vs_gate.py" "$sweep_json" "$exit2_json" --bootstrap "$BOOT" \
      | tee "$(dirname "$exit2_json")/gate_vs_gate.txt"
  fi
fi

if step plot; then
  extra=()
  feature exit2 && feature backbone && extra=(--exit2-sweep "$exit2_json")
  $PYTHON "$(dirname "$0")/gate_tradeoff_plot.py" "$sweep_json" "${oracles[@]}" "${extra[@]}" \
    --out "$(dirname "$sweep_json")/gate_oracle.png"
fi
echo "sweep (plots, fronts, the gates' advantage over the fixed-exit curve): $(dirname "$sweep_json")/"
