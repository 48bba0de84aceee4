"""Token-level KD from a >= 20x larger text LLM teacher vs hard-label SFT on the same text, by scene k-fold
cross-validation on CPU (issue 13, item 7).

Per fold (scenes: :func:`dsdrive.evaluation.cross_validate.make_folds`; the fold's scenes are held out
from every step):

1. tokenizer: the student recipe's own byte-level BPE of the training scenes
   (:func:`dsdrive.student.tokenizer.build_tokenizer`), shared by the teacher and both students;
2. teacher: a Qwen2 causal LM (default 16 M parameters, ~21x the 0.77 M tiny student) trained (SFT)
   on the training scenes' GPT-Driver style scene text -> rule-teacher reasoning
   (:mod:`dsdrive.training.text_teacher`), saved with ``save_pretrained``;
3. annotation: ``dsdrive annotate --annotator hf-llm --model TEACHER --prompt PROMPT --logprobs K`` on
   the training samples only, then ``dsdrive merge`` into the dataset (held-out samples keep their
   rule annotation, the evaluation target);
4. students, per seed, the tiny recipe (``recipes/configs/tiny/distill.yaml``) with the teacher's
   tokenizer on the teacher's own tokens: ``kd`` = ``--token_kd_weight W`` (sparse top-k KD,
   :mod:`dsdrive.training.token_kd`) and ``sft`` = ``--teacher_tokens_target true`` (weight 0: the
   same tokens as hard labels only); same seeds, same data, same steps;
5. held-out evaluation per sample (recorded ego, complete future): the reasoning CE of the student
   (teacher forcing) against the RULE teacher's reasoning of the held-out scenes, text consistency
   (:func:`dsdrive.evaluation.metrics.reasoning_consistency.reasoning_consistency`: parsed 0/1,
   agreeing 0/1 over all texts, agreement among parsed texts) and ST-P3 L2 avg; the teacher's own
   CE on the same texts is a reference row.

Statistics (:mod:`dsdrive.evaluation.statistics`): per arm, per-sample values averaged over seeds,
then the scene bootstrap; ``kd - sft`` is a paired difference per sample bootstrapped by scene.

Resumable: every step writes its output folder / json under ``--out`` and is skipped when present.
``--folds-to-run`` runs some folds only (e.g. one process per fold); ``--summarise-only`` writes
``kd_experiment.json`` and ``kd_experiment.md`` from what is done.

Run:
    python recipes/token_kd_experiment.py --data /tmp/H/planning_annotated --out outputs/kd_exp --folds 2 --seeds 0 1
    python recipes/token_kd_experiment.py ... --folds-to-run 0 &  python recipes/token_kd_experiment.py ... --folds-to-run 1
    python recipes/token_kd_experiment.py ... --summarise-only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARMS = ("sft", "kd")
METRICS = {"reasoning_ce": "held-out reasoning CE vs rule text (nats/token)", "parsed": "parse rate (%)",
           "agree_all": "agreement over all texts (%)", "agree_parsed": "agreement among parsed texts (%)",
           "l2_stp3_avg": "ST-P3 L2 avg (m)"}


def _run(cmd: list[str], log: Path) -> None:
    """Run a command (this Python's environment), appending to ``log``; raise naming the log on failure."""
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if r.returncode:
        raise RuntimeError(f"{shlex.join(cmd[:4])} ... failed (exit {r.returncode}); see {log}")


def _dsdrive() -> list[str]:
    return [sys.executable, "-m", "dsdrive.cli"]


def heldout_samples(samples, scenes):
    """Recorded-ego, un-mirrored samples of ``scenes`` with a complete 3 s future (what cross-validation scores)."""
    from dsdrive.evaluation.cross_validate import is_recorded_ego

    return [s for s in samples if s.scene_id in scenes and is_recorded_ego(s) and bool(np.all(s.targets.ego_future_mask))]


def student_heldout_metrics(ckpt: Path, test, template: str) -> dict:
    """Per-sample held-out metrics of one student checkpoint (module docstring, step 5).

    Args:
        ckpt: student checkpoint folder; test: held-out samples carrying their RULE annotation.
        template: reasoning template version the rule text is rendered with.

    Returns:
        ``{"sample_ids", "scene_ids", "reasoning_ce", "parsed", "agree_all", "agree_parsed", "l2_stp3_avg",
        "texts"}``; ``agree_parsed`` is NaN for an unparsed text.
    """
    import functools

    import torch

    from dsdrive.annotation.reasoning import render_reasoning
    from dsdrive.evaluation.cross_validate import COLUMNS, per_sample_columns
    from dsdrive.evaluation.metrics.planning import evaluate_trajectories
    from dsdrive.evaluation.metrics.reasoning_consistency import reasoning_consistency
    from dsdrive.evaluation.open_loop_report import explain_samples
    from dsdrive.planners.student import StudentPlanner

    planner = StudentPlanner(ckpt)
    proc, model = planner.processor, planner.model
    proc.reasoning_fn = functools.partial(render_reasoning, version=template)
    ce = []
    with torch.inference_mode():
        for b in range(0, len(test), 16):
            batch = proc.collate([proc.encode_sample(s) for s in test[b:b + 16]])
            out = model(**batch)
            ids, mask = batch["reasoning_ids"], batch["reasoning_mask"]
            tok = torch.nn.functional.cross_entropy(out.reasoning_logits.float().transpose(1, 2), ids, reduction="none")
            ce += ((tok * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    texts, wps = explain_samples(planner, test)
    cons = reasoning_consistency(texts, wps, [s.inputs.speed for s in test], [s.sample_id for s in test])
    m = evaluate_trajectories(wps, test)
    l2 = per_sample_columns(m.l2, m.collision)[:, COLUMNS.index(("stp3", "L2", "avg"))]
    recs = cons["records"]
    return {"sample_ids": [s.sample_id for s in test], "scene_ids": [s.scene_id for s in test], "reasoning_ce": ce,
            "parsed": [100.0 * (r["stated"] is not None) for r in recs], "agree_all": [100.0 * bool(r["agrees"]) for r in recs],
            "agree_parsed": [float("nan") if r["agrees"] is None else 100.0 * r["agrees"] for r in recs],
            "l2_stp3_avg": l2.tolist(), "texts": texts}


def run_fold(fold: int, scenes: list[str], all_scenes: list[str], args) -> None:
    """Steps 1-5 for one fold (each skipped when its output exists)."""
    import torch

    from dsdrive.data.dataset import load_dataset_dir, load_samples
    from dsdrive.data.atomic_io import write_json_atomic
    from dsdrive.student.tokenizer import build_tokenizer
    from dsdrive.training.text_teacher import TextTeacherSettings, completion_ce, train_text_teacher

    torch.set_num_threads(1)
    root = Path(args.out) / f"fold{fold}"
    root.mkdir(parents=True, exist_ok=True)
    log = root / "steps.log"
    train_scenes = [s for s in all_scenes if s not in scenes]
    samples = load_samples(args.data)
    train = [s for s in samples if s.scene_id in train_scenes]
    test = heldout_samples(samples, scenes)
    teacher = root / "teacher"
    settings = TextTeacherSettings(hidden_size=args.teacher_hidden, layers=args.teacher_layers, heads=args.teacher_heads,
                                   kv_heads=args.teacher_kv_heads, intermediate_size=args.teacher_intermediate, prompt=args.prompt,
                                   reasoning_template=args.reasoning_template, max_steps=args.teacher_steps, batch_size=args.teacher_batch,
                                   learning_rate=args.teacher_lr, seed=0)
    if not (teacher / "teacher.json").is_file():
        t0 = time.perf_counter()
        tok = build_tokenizer(train, vocab_size=args.vocab_size)  # the student recipe's tokenizer, fitted on the training scenes
        info = train_text_teacher(train, tok, teacher, settings)
        info.update(settings=asdict(settings), train_scenes=train_scenes, test_scenes=scenes, wall_s=round(time.perf_counter() - t0, 1))
        write_json_atomic(teacher / "teacher.json", info)
    if not (teacher / "heldout_ce.json").is_file():
        write_json_atomic(teacher / "heldout_ce.json", completion_ce(teacher, test, args.prompt, args.reasoning_template))
    train_data, ann, merged = root / "train_data", root / "annotations", root / "data"
    if not (train_data / "dataset_info.json").is_file():
        ds = load_dataset_dir(args.data)
        ds.filter(lambda r: r["scene_id"] in set(train_scenes)).save_to_disk(str(train_data))
    if not (root / "annotate.done").is_file():
        t0 = time.perf_counter()
        _run(_dsdrive() + ["annotate", "--annotator", "hf-llm", "--model", str(teacher), "--prompt", args.prompt, "--logprobs",
                           str(args.logprobs), "--data", str(train_data), "--out", str(ann), "--batch-size", "16"], log)
        (root / "annotate.done").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    if not (merged / "dataset_info.json").is_file():
        _run(_dsdrive() + ["merge", "--data", args.data, "--annotations", str(ann), "--out", str(merged)], log)
    jobs = []
    for seed in args.seeds:
        for arm in ARMS:
            out = root / f"{arm}-seed{seed}"
            if (out / "checkpoint" / "config.json").is_file():
                continue
            arm_flags = ["--token_kd_weight", str(args.kd_weight), "--token_kd_divergence", args.kd_divergence,
                         "--token_kd_temperature", str(args.kd_temperature)] if arm == "kd" else ["--teacher_tokens_target", "true"]
            cmd = _dsdrive() + ["distill", "--config", str(REPO / "recipes/configs/tiny/distill.yaml"), "--data", str(merged),
                                "--val_scenes", ",".join(scenes), "--seed", str(seed), "--output_dir", str(out / "checkpoint"),
                                "--tokenizer_path", str(teacher), "--teacher_logprobs", str(ann), "--reasoning_template", args.reasoning_template,
                                "--eval_open_loop", "false", "--disable_tqdm", "true", *arm_flags, *shlex.split(args.student_args)]
            out.mkdir(parents=True, exist_ok=True)
            jobs.append((out, cmd))
    for i in range(0, len(jobs), args.parallel):  # a few single-thread students at once
        running = []
        for out, cmd in jobs[i:i + args.parallel]:
            f = open(out / "train.log", "a")
            f.write(f"$ {shlex.join(cmd)}\n")
            f.flush()
            running.append((out, cmd, f, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO), time.perf_counter()))
        for out, cmd, f, p, t0 in running:
            rc = p.wait()
            f.close()
            if rc:
                raise RuntimeError(f"student {out.name} of fold {fold} failed (exit {rc}); see {out / 'train.log'}")
            write_json_atomic(out / "train.json", {"argv": cmd[3:], "wall_s": round(time.perf_counter() - t0, 1)})
    for seed in args.seeds:
        for arm in ARMS:
            out = root / f"{arm}-seed{seed}"
            if not (out / "heldout.json").is_file():
                write_json_atomic(out / "heldout.json", student_heldout_metrics(out / "checkpoint", test, args.reasoning_template))


def _ci(ci, digits: int) -> dict:
    return {"mean": round(float(ci.mean), digits), "low": round(float(ci.low), digits), "high": round(float(ci.high), digits),
            "num_samples": int(ci.num_samples), "num_scenes": int(ci.num_scenes)}


def summarise(args, folds: list[list[str]]) -> dict:
    """Pool the finished folds: per-arm CIs and the paired kd - sft differences (module docstring)."""
    from dsdrive.evaluation.statistics import METHOD, paired_difference_ci, scene_bootstrap_ci

    root = Path(args.out)
    per_arm = {arm: {k: [] for k in (*METRICS, "sample_ids", "scene_ids")} for arm in (*ARMS, "teacher")}
    done_folds, per_seed, teachers, failures = [], {arm: {} for arm in ARMS}, [], {}
    for f, scenes in enumerate(folds):
        fr = root / f"fold{f}"
        runs = {(arm, s): fr / f"{arm}-seed{s}" / "heldout.json" for arm in ARMS for s in args.seeds}
        if not all(p.is_file() for p in runs.values()):
            continue
        done_folds.append(f)
        res = {k: json.loads(p.read_text()) for k, p in runs.items()}
        ids = res[(ARMS[0], args.seeds[0])]["sample_ids"]
        for arm in ARMS:
            for k in METRICS:
                vals = np.array([res[(arm, s)][k] for s in args.seeds], np.float64)  # (seeds, N)
                with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
                    __import__("warnings").simplefilter("ignore")
                    per_arm[arm][k] += np.nanmean(vals, 0).tolist()
                for s, row in zip(args.seeds, vals):
                    per_seed[arm].setdefault(k, {}).setdefault(s, []).extend(row.tolist())
            per_arm[arm]["sample_ids"] += ids
            per_arm[arm]["scene_ids"] += res[(arm, args.seeds[0])]["scene_ids"]
        tce = json.loads((fr / "teacher" / "heldout_ce.json").read_text())
        per_arm["teacher"]["reasoning_ce"] += [tce.get(i, float("nan")) for i in ids]
        per_arm["teacher"]["scene_ids"] += res[(ARMS[0], args.seeds[0])]["scene_ids"]
        info = json.loads((fr / "teacher" / "teacher.json").read_text())
        from dsdrive.annotation.store import read_index

        index = read_index(fr / "annotations")
        failures[f] = {"annotated": len(index.annotations), "failed": len(index.failures)}
        student_params = None
        cfg = fr / f"kd-seed{args.seeds[0]}" / "checkpoint" / "model.safetensors"
        if cfg.is_file():
            from safetensors import safe_open

            with safe_open(str(cfg), "pt") as sf:
                student_params = int(sum(np.prod(sf.get_slice(k).get_shape()) for k in sf.keys() if k != "anchors"))
        teachers.append({"fold": f, "test_scenes": scenes, "teacher_parameters": info["parameters"], "student_parameters": student_params,
                         "ratio": round(info["parameters"] / student_params, 1) if student_params else None,
                         "teacher_train_loss_first_last": [info["train_loss_first"], info["train_loss_last"]],
                         "teacher_wall_s": info["wall_s"], **failures[f]})
    out = {"settings": {k: v for k, v in vars(args).items() if k not in ("summarise_only", "folds_to_run")}, "folds": folds,
           "folds_done": done_folds, "method": METHOD, "n_boot": args.n_boot, "teachers": teachers, "arms": {}, "paired_kd_minus_sft": {},
           "per_seed_means": {}}
    if not done_folds:
        return out
    sc = np.array(per_arm["sft"]["scene_ids"])
    for arm in ARMS:
        out["arms"][arm] = {k: _ci(scene_bootstrap_ci(np.array(per_arm[arm][k]), sc, n_boot=args.n_boot), 3) for k in METRICS}
        out["per_seed_means"][arm] = {k: {str(s): round(float(np.nanmean(v)), 3) for s, v in d.items()} for k, d in per_seed[arm].items()}
    out["arms"]["teacher"] = {"reasoning_ce": _ci(scene_bootstrap_ci(np.array(per_arm["teacher"]["reasoning_ce"]), sc, n_boot=args.n_boot), 3)}
    for k in METRICS:
        out["paired_kd_minus_sft"][k] = _ci(paired_difference_ci(np.array(per_arm["kd"][k]), np.array(per_arm["sft"][k]), sc, n_boot=args.n_boot), 3)
    return out


def render_markdown(rep: dict) -> str:
    """The summary as a markdown table (mean [95 % CI])."""
    s = rep["settings"]
    lines = [f"# Token KD vs hard-label SFT from a text LLM teacher ({len(rep['folds_done'])} of {len(rep['folds'])} folds, seeds {s['seeds']})", "",
             f"Data `{s['data']}`; folds {rep['folds']}; {rep['method']}, B = {rep['n_boot']}.", ""]
    for t in rep["teachers"]:
        lines.append(f"* fold {t['fold']} (held out {', '.join(t['test_scenes'])}): teacher {t['teacher_parameters'] / 1e6:.1f} M parameters = "
                     f"{t['ratio']}x the student ({(t['student_parameters'] or 0) / 1e6:.2f} M); train CE {t['teacher_train_loss_first_last'][0]:.2f} -> "
                     f"{t['teacher_train_loss_first_last'][1]:.2f}; {t['annotated']} training samples annotated, {t['failed']} failed answers; "
                     f"{t['teacher_wall_s'] / 60:.0f} min")
    if not rep["arms"]:
        return "\n".join(lines + ["", "No fold finished yet."]) + "\n"
    lines += ["", "| metric | SFT on teacher text | token KD | KD - SFT (paired) | reading |", "|---|---|---|---|---|"]
    cell = lambda c: f"{c['mean']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"  # noqa: E731
    for k, name in METRICS.items():
        d = rep["paired_kd_minus_sft"][k]
        reading = "no measurable difference" if d["low"] <= 0 <= d["high"] else ("KD higher" if d["low"] > 0 else "KD lower")
        lines.append(f"| {name} | {cell(rep['arms']['sft'][k])} | {cell(rep['arms']['kd'][k])} | {cell(d)} | {reading} |")
    lines += ["", f"Teacher's own held-out reasoning CE (same rule texts, its own prompt): {cell(rep['arms']['teacher']['reasoning_ce'])} nats/token.", "",
              "Per-seed means: " + json.dumps(rep["per_seed_means"])]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python recipes/token_kd_experiment.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="rule-annotated planning dataset folder")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--folds", type=int, default=2, help="K of the scene k-fold split")
    p.add_argument("--folds-to-run", type=int, nargs="*", default=None, help="only these folds (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="student seeds (the same for both arms)")
    p.add_argument("--parallel", type=int, default=2, help="student runs at once (one thread each)")
    p.add_argument("--prompt", default="gpt_driver_text_compact_v1", help="hf-llm text prompt stem (prompts/teacher/)")
    p.add_argument("--reasoning-template", default="v1", help="reasoning template version of the teacher's SFT targets and the held-out rule text")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE size (the tiny recipe's tokenizer_vocab_size)")
    p.add_argument("--teacher-hidden", type=int, default=512)
    p.add_argument("--teacher-layers", type=int, default=5)
    p.add_argument("--teacher-heads", type=int, default=8)
    p.add_argument("--teacher-kv-heads", type=int, default=2)
    p.add_argument("--teacher-intermediate", type=int, default=1536)
    p.add_argument("--teacher-steps", type=int, default=60)
    p.add_argument("--teacher-batch", type=int, default=8)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--logprobs", type=int, default=8, help="top-k log-probs the teacher records per token")
    p.add_argument("--kd-weight", type=float, default=1.0)
    p.add_argument("--kd-divergence", default="forward_kl", choices=["forward_kl", "reverse_kl", "jsd"])
    p.add_argument("--kd-temperature", type=float, default=1.0)
    p.add_argument("--student-args", default="", help="extra dsdrive distill flags for both arms, e.g. '--max_steps 100'")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--summarise-only", action="store_true", help="only pool the finished folds")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    from dsdrive.data.atomic_io import write_json_atomic, write_text_atomic
    from dsdrive.data.dataset import load_dataset_dir
    from dsdrive.evaluation.cross_validate import make_folds

    args = build_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    scenes = sorted(set(load_dataset_dir(args.data)["scene_id"]))
    folds = make_folds(scenes, args.folds)
    if not args.summarise_only:
        for f in (args.folds_to_run if args.folds_to_run is not None else range(len(folds))):
            if not 0 <= f < len(folds):
                raise ValueError(f"--folds-to-run {f}: only folds 0..{len(folds) - 1} exist")
            run_fold(f, folds[f], scenes, args)
    rep = summarise(args, folds)
    out = Path(args.out)
    write_json_atomic(out / "kd_experiment.json", rep)
    write_text_atomic(out / "kd_experiment.md", render_markdown(rep))
    print(render_markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
