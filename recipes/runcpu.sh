#!/usr/bin/env bash
# Run as: bash recipes/runcpu.sh
# The main job of dsdrive end to end on its default data, small enough for 2 CPU cores:
#   set-up -> dsdrive build (planning samples) -> dsdrive annotate + merge (rule annotator) ->
#   distil the student (accelerate launch recipes/distill.py, i.e. `dsdrive distill`) ->
#   dsdrive open-loop on the held-out scenes (`python eval/open_loop.py` is the same command).
# Data: --input/DSDRIVE_SCENARIOS, else ../shared/data/nuscenes-mini-scenarionet (see README); its
# held-out scenes are dsdrive.data.splits.DEFAULT_VAL_SCENES. Without real scenes, 8 MetaDrive
# procedural scenarios are built and the last two (pg-seed00006, pg-seed00007) are held out, named
# explicitly: no stage ever substitutes a split of its own.
# Outputs go to $DSDRIVE_OUT (default outputs/main); every stage resumes or overwrites atomically.
set -euo pipefail
cd "$(dirname "$0")/.."
bash recipes/setup_env.sh
source .venv/bin/activate
OUT=${DSDRIVE_OUT:-outputs/main}
mkdir -p "$OUT"
export PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
# Reproducible figures across machines: ATen and MKL otherwise pick the widest SIMD kernels the CPU has
# (AVX-512 here, AVX2 or none elsewhere); float rounding then differs and training amplifies it. Pinning
# both to AVX2 gives the same table on every x86-64 machine with AVX2 (README states the tolerance).
export ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-avx2} MKL_CBWR=${MKL_CBWR:-AVX2}
start=$(date +%s)

echo "== 1/5 build planning samples (ScenarioNet -> ego-frame keyframes at 2 Hz)"
if python -c "from dsdrive.data.paths import default_scenarios_dir; default_scenarios_dir()" 2>/dev/null; then
  # every logged vehicle as ego (LAV) + left-right mirroring: ~10x the samples, RIGHT commands present;
  # evaluation still scores only the recorded ego, un-mirrored (README, "More samples from the same logs")
  dsdrive build --source scenarionet ${DSDRIVE_SCENARIOS:+--input "$DSDRIVE_SCENARIOS"} --out "$OUT/planning" --no-progress \
    --agents-as-ego --mirror
  VAL=$(python -c "from dsdrive.data.splits import DEFAULT_VAL_SCENES; print(','.join(DEFAULT_VAL_SCENES))")
else
  # No real scenes here: say how to get them, then drive on MetaDrive's procedural scenarios.
  python -c "from dsdrive.data.paths import GET_DATA_HELP; print(GET_DATA_HELP)"
  echo "Falling back to 8 MetaDrive procedural scenarios (dsdrive build --source metadrive-pg)."
  dsdrive build --source metadrive-pg --num-scenarios 8 --out "$OUT/planning" --no-progress
  VAL=pg-seed00006,pg-seed00007
fi
echo "held-out scenes: $VAL"

echo "== 2/5 annotate with the privileged rule annotator (resumable)"
dsdrive annotate --annotator rule --data "$OUT/planning" --out "$OUT/annotations"
dsdrive merge --data "$OUT/planning" --annotations "$OUT/annotations" --out "$OUT/planning_annotated"

echo "== 3/5 distil the student (accelerate launch recipes/distill.py, tiny config, CPU)"
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  recipes/distill.py --config recipes/configs/tiny/distill.yaml \
  --data "$OUT/planning_annotated" --val_scenes "$VAL" --output_dir "$OUT/student"

echo "== 4/5 open-loop evaluation on the held-out scenes (ST-P3 and UniAD protocols)"
dsdrive open-loop --data "$OUT/planning" --scenes "$VAL" \
  --planner constant_velocity ego_mlp student --checkpoint student="$OUT/student" \
  --train-ego-mlp-if-missing --out "$OUT/open_loop.json" --report "$OUT/open_loop_report"

echo "== 5/5 done in $(( $(date +%s) - start )) s; tables in $OUT/open_loop.md, worst cases in $OUT/open_loop_report/index.html"
