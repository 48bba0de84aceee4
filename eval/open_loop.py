"""Open-loop evaluation of planners on held-out nuScenes scenes: L2 and collision rate.

Run as:
    python eval/open_loop.py --data outputs/main/planning \
        --planner constant_velocity ego_mlp --train-ego-mlp-if-missing --out outputs/open_loop/baselines.json
    python eval/open_loop.py --data DIR --planner ego_mlp --checkpoint CKPT_DIR --scenes val --out ol.json
    python eval/open_loop.py --data DIR --planner student --checkpoint ego_mlp=CKPT1 student=CKPT2 ...

Writes FILE.json (all figures) and FILE.md (tables for the ST-P3 and UniAD protocols, all
samples and per command) and prints the tables. ``--scenes`` defaults to ``val``: the held-out
scenes of :func:`dsdrive.data.splits.split_scenes`.

ego_mlp without a checkpoint: with ``--train-ego-mlp-if-missing`` it is trained on the
*training* scenes of the same ``--data`` (never the held-out ones), saved to
``FILE_ego_mlp/`` beside the report, and this is printed; without the flag it is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsdrive.data.dataset import load_dataset_dir, load_samples
from dsdrive.evaluation.open_loop import PROTOCOL_TITLES, evaluate_planner, render_markdown, select_scenes, write_report
from dsdrive.planners.registry import load_planner, parse_checkpoints, planner_names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="planning dataset folder (dsdrive.data.dataset.save_samples)")
    ap.add_argument("--planner", nargs="+", required=True, choices=planner_names(), help="one or more planners")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="DIR, or NAME=DIR per trained planner")
    ap.add_argument("--scenes", default="val", help="val (default) | train | all | comma-separated scene ids")
    ap.add_argument("--train-ego-mlp-if-missing", action="store_true", help="train ego_mlp on the training scenes if no checkpoint is given")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="report FILE.json; FILE.md is written beside it")
    args = ap.parse_args(argv)

    try:
        checkpoints = parse_checkpoints(args.checkpoint, args.planner)
    except ValueError as e:
        ap.error(str(e))
    scene_ids = list(load_dataset_dir(args.data)["scene_id"])
    scenes = select_scenes(scene_ids, args.scenes)
    samples = load_samples(args.data, scenes=scenes)
    print(f"{args.data}: {len(samples)} samples from scenes {scenes}")

    report: dict = {"data": str(args.data), "scenes": scenes, "num_samples": len(samples), "protocols": PROTOCOL_TITLES, "planners": {}}
    for name in args.planner:
        ckpt = checkpoints.get(name)
        if name == "ego_mlp" and ckpt is None:
            if not args.train_ego_mlp_if_missing:
                raise SystemExit(
                    "ego_mlp needs --checkpoint DIR (python recipes/train_ego_mlp.py --data DIR --out CKPT), "
                    "or pass --train-ego-mlp-if-missing to train it here on the training scenes"
                )
            from dsdrive.planners.ego_mlp import train_ego_mlp_on_split

            out_json = Path(args.out)
            ckpt = str(out_json.with_name(out_json.stem + "_ego_mlp"))
            planner = train_ego_mlp_on_split(args.data)
            planner.save(ckpt)
            print(f"ego_mlp: no checkpoint given; trained on training scenes {planner.config.trained_on_scenes} "
                  f"({planner.config.num_train_samples} samples, final L1 {planner.config.final_train_loss:.3f}) -> {ckpt}")
        planner = load_planner(name, ckpt)
        entry = evaluate_planner(planner, samples, batch_size=args.batch_size)
        entry["checkpoint"] = ckpt
        trained_on = getattr(getattr(planner, "config", None), "trained_on_scenes", None)
        if trained_on:
            entry["trained_on_scenes"] = list(trained_on)
            overlap = sorted(set(trained_on) & set(scenes))
            if overlap:
                entry["train_eval_overlap_scenes"] = overlap
                print(f"WARNING: {name} was trained on evaluated scenes {overlap}", file=sys.stderr)
        report["planners"][name] = entry
        print(f"{name}: {entry['num_evaluated']} samples scored, {entry['num_skipped_incomplete_future']} skipped (incomplete future)")

    out_json, out_md = write_report(report, args.out)
    print(render_markdown(report["planners"]))
    print(f"wrote {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
