#!/usr/bin/env bash
# Run as: bash recipes/runcpu.sh
# The main job of dsdrive end to end on its default data, small enough for 2 CPU cores:
#   set-up -> build planning samples -> rule-teacher annotation -> distil the student
#   (accelerate launch recipes/distill.py) -> open-loop evaluation on the held-out scenes.
# Data: --input/DSDRIVE_SCENARIOS, else ../shared/data/nuscenes-mini-scenarionet (see README).
# Outputs go to $DSDRIVE_OUT (default outputs/main); every stage resumes or overwrites atomically.
set -euo pipefail
cd "$(dirname "$0")/.."
bash recipes/setup_env.sh
source .venv/bin/activate
OUT=${DSDRIVE_OUT:-outputs/main}
mkdir -p "$OUT"
export PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
start=$(date +%s)

echo "== 1/5 build planning samples (ScenarioNet -> ego-frame keyframes at 2 Hz)"
if python -c "from dsdrive.data.paths import default_scenarios_dir; default_scenarios_dir()" 2>/dev/null; then
  dsdrive build --source scenarionet ${DSDRIVE_SCENARIOS:+--input "$DSDRIVE_SCENARIOS"} --out "$OUT/planning" --no-progress
else
  # No real scenes here: say how to get them, then drive on MetaDrive's procedural scenarios.
  python -c "from dsdrive.data.paths import GET_DATA_HELP; print(GET_DATA_HELP)"
  echo "Falling back to 8 MetaDrive procedural scenarios (dsdrive build --source metadrive-pg)."
  dsdrive build --source metadrive-pg --num-scenarios 8 --out "$OUT/planning" --no-progress
fi

echo "== 2/5 annotate with the privileged rule teacher (resumable)"
dsdrive annotate --teacher rule --data "$OUT/planning" --out "$OUT/annotations"
dsdrive merge --data "$OUT/planning" --annotations "$OUT/annotations" --out "$OUT/planning_annotated"

if [ -f recipes/distill.py ]; then
  echo "== 3/5 distil the student (accelerate launch recipes/distill.py, tiny config, CPU)"
  accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    recipes/distill.py --config recipes/configs/tiny/distill.yaml \
    --data "$OUT/planning_annotated" --output_dir "$OUT/student"
  PLANNERS="constant_velocity ego_mlp student"; CKPT="--checkpoint student=$OUT/student"
else
  PLANNERS="constant_velocity ego_mlp"; CKPT=""
fi

echo "== 4/5 open-loop evaluation on the held-out scenes (ST-P3 and UniAD protocols)"
python eval/open_loop.py --data "$OUT/planning" --planner $PLANNERS $CKPT \
  --train-ego-mlp-if-missing --out "$OUT/open_loop.json"

echo "== 5/5 done in $(( $(date +%s) - start )) s; tables in $OUT/open_loop.md"
