"""Text-only reasoning consistency of cross-validated students, and paired differences between two CV runs.

For each ``NAME=CV_DIR[:PLANNER]`` the student checkpoints of ``CV_DIR/runs/PLANNER/fold{F}-seed{S}``
(``dsdrive cross-validate`` output; PLANNER defaults to ``student``) explain their own held-out
samples (recorded ego, complete future; :func:`dsdrive.evaluation.open_loop_report.explain_samples`),
and :func:`dsdrive.evaluation.metrics.reasoning_consistency.reasoning_consistency` scores each text
from the text alone (no fallback to the meta-action head). Per sample: parsed (0/100 %), agreeing
over all texts (0/100 %), agreeing among parsed texts (NaN when unparsed); seeds averaged per
sample; 95 % CIs by the scene bootstrap (:mod:`dsdrive.evaluation.statistics`); with two or more
runs, the paired differences of each run to the first, per sample, bootstrapped by scene.

Run:
    python eval/consistency_cv.py --run v1=outputs/cv:student v2=outputs/cv_v2:student --seeds 0 --out outputs/consistency.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

METRICS = ("parsed", "agree_all", "agree_parsed")


def run_consistency(cv_dir: Path, planner: str, seeds: list[int]) -> dict:
    """Per-sample consistency of one CV run (seeds averaged per sample); raises FileNotFoundError naming a missing checkpoint."""
    import torch

    from dsdrive.data.dataset import load_samples
    from dsdrive.evaluation.cross_validate import is_recorded_ego
    from dsdrive.evaluation.metrics.reasoning_consistency import reasoning_consistency
    from dsdrive.evaluation.open_loop_report import explain_samples
    from dsdrive.planners.student import StudentPlanner

    torch.set_num_threads(1)
    settings = json.loads((cv_dir / "cv_settings.json").read_text())
    samples = [s for s in load_samples(settings["data"]) if is_recorded_ego(s) and bool(np.all(s.targets.ego_future_mask))]
    per_seed, ids, scenes, examples = [], None, None, []
    for seed in seeds:
        rows, sid, sc = {k: [] for k in METRICS}, [], []
        for f, fold in enumerate(settings["fold_scenes"]):
            ckpt = cv_dir / "runs" / planner / f"fold{f}-seed{seed}" / "checkpoint"
            if not (ckpt / "config.json").is_file():
                raise FileNotFoundError(f"{ckpt}: no student checkpoint (fold {f}, seed {seed})")
            test = [s for s in samples if s.scene_id in fold]
            texts, wps = explain_samples(StudentPlanner(ckpt), test)
            recs = reasoning_consistency(texts, wps, [s.inputs.speed for s in test], [s.sample_id for s in test])["records"]
            rows["parsed"] += [100.0 * (r["stated"] is not None) for r in recs]
            rows["agree_all"] += [100.0 * bool(r["agrees"]) for r in recs]
            rows["agree_parsed"] += [np.nan if r["agrees"] is None else 100.0 * r["agrees"] for r in recs]
            sid += [s.sample_id for s in test]
            sc += [s.scene_id for s in test]
            if f == 0 and seed == seeds[0]:
                examples = texts[:3]
        ids, scenes = ids or sid, scenes or sc
        per_seed.append(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean = {k: np.nanmean(np.array([r[k] for r in per_seed], np.float64), 0) for k in METRICS}
    return {"sample_ids": ids, "scene_ids": scenes, "values": mean, "examples": examples,
            "per_seed": {k: [float(np.nanmean(r[k])) for r in per_seed] for k in METRICS}}


def main(argv: list[str] | None = None) -> int:
    from dsdrive.evaluation.statistics import METHOD, paired_difference_ci, scene_bootstrap_ci

    p = argparse.ArgumentParser(prog="python eval/consistency_cv.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="+", required=True, help="NAME=CV_DIR[:PLANNER] (the first is the reference of the paired differences)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", required=True, help="output json")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, _, rest = spec.partition("=")
        path, _, planner = rest.partition(":")
        runs[name] = run_consistency(Path(path), planner or "student", args.seeds)
        print(name, {k: round(float(np.nanmean(v)), 2) for k, v in runs[name]["values"].items()}, "example:", repr(runs[name]["examples"][0][:160]), flush=True)
    ref = next(iter(runs))
    sc = np.array(runs[ref]["scene_ids"])
    ci = lambda c: {"mean": round(float(c.mean), 2), "low": round(float(c.low), 2), "high": round(float(c.high), 2), "n": int(c.num_samples)}  # noqa: E731
    out = {"method": METHOD, "seeds": args.seeds, "runs": {}, "paired_minus_" + ref: {}}
    for name, r in runs.items():
        if r["sample_ids"] != runs[ref]["sample_ids"]:
            raise ValueError(f"run {name}: its held-out samples differ from {ref}'s (another data set or folds)")
        out["runs"][name] = {k: ci(scene_bootstrap_ci(r["values"][k], sc, n_boot=args.n_boot)) for k in METRICS}
        out["runs"][name]["per_seed"] = r["per_seed"]
        out["runs"][name]["examples"] = r["examples"]
        if name != ref:
            out["paired_minus_" + ref][name] = {k: ci(paired_difference_ci(r["values"][k], runs[ref]["values"][k], sc, n_boot=args.n_boot))
                                               for k in METRICS}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"} | {"runs": {n: {k: v for k, v in r.items() if k != "examples"}
                                                                              for n, r in out["runs"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
