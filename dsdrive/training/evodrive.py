"""EvoDriveVLA's distillation on the text-trajectory VLA, in three resumable stages (arXiv 2603.09465).

Run as:
    python recipes/configs/tiny-vl/build_data.py --out /tmp/V/camera_planning
    python recipes/evodrive.py --config recipes/configs/tiny-vl/evodrive.yaml --output_dir /tmp/evo

Stages (each skipped when its output exists, so a stopped run resumes at the next stage):

1. ``<output_dir>/teacher``: the future-aware oracle teacher (:mod:`dsdrive.training.oracle_teacher`):
   the student's VLM, built exactly as the student is (same backbone or the same seeded tiny
   Qwen2.5-VL and tokenizer), trained on the ground-truth answer to its privileged prompt with
   coarse-to-fine refinement (``refine_prob``) for ``teacher_max_steps`` (0 = ``max_steps``) steps.
2. ``<output_dir>/soft_targets``: the per-sample pick among four teacher candidates
   (:mod:`dsdrive.training.soft_targets`; ``mc_samples``, ``mc_dropout``, ``soft_target_top_k``).
3. ``<output_dir>/student``: the text-trajectory student trained with CE_GT and the switched-on
   terms (``logit_kd``, ``hidden_kd``, ``self_anchor``; :mod:`dsdrive.training.evodrive_trainer`),
   exported like the baseline (loadable by ``dsdrive.planners.text_trajectory.TextTrajectoryPlanner``)
   with ``eval_heldout.json`` (with held-out scenes: open-loop L2 / collision and the parse rate).

Stages 1-2 run only when a KD switch is on; with every switch off stage 3 is the baseline
(``recipes/text_trajectory.py``) exactly. ``--config`` sets defaults, flags override (trl
``TrlParser``; fields in :mod:`dsdrive.training.evodrive_config` and
:class:`dsdrive.training.text_trajectory.ScriptArguments`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from trl import TrlParser

from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.student.text_trajectory_vla import SETTINGS_FILE, TextTrajectoryVLA
from dsdrive.training.evodrive_config import EvoDriveConfig
from dsdrive.training.text_trajectory import ScriptArguments, apply_vla_lora, build_vla, export, load_split
from dsdrive.training.text_trajectory_trainer import TextTrajectoryItems

TEACHER_DIR, SOFT_DIR, STUDENT_DIR = "teacher", "soft_targets", "student"
ORACLE_FILE = "oracle.json"


def _stage_args(args: EvoDriveConfig, out: Path, **changes) -> EvoDriveConfig:
    return dataclasses.replace(args, output_dir=str(out), **changes)


def _build(args: EvoDriveConfig, train):
    """The VLM (adapters on with ``use_lora``) and its text-trajectory processor, seeded by ``args.seed``."""
    torch.manual_seed(args.seed)
    model, processor = build_vla(args, train)
    return model, processor


def train_teacher(args: EvoDriveConfig, train, out: Path) -> None:
    """Stage 1: train and export the oracle teacher into ``out`` (module docstring)."""
    from dsdrive.training.oracle_teacher import OracleProcessor, OracleTeacherTrainer

    targs = _stage_args(args, out, max_steps=args.teacher_max_steps or args.max_steps)
    model, base_proc = _build(targs, train)
    proc = OracleProcessor.from_text_trajectory(base_proc, targs.oracle_prompt_version)
    if targs.use_lora:
        model = apply_vla_lora(model, targs)
    trainer = OracleTeacherTrainer(model=model, args=targs, train_dataset=TextTrajectoryItems(train, proc), data_collator=proc.collate,
                                   refine_prob=targs.refine_prob, tokenizer=proc.tokenizer)
    trainer.train()
    final = export(model, targs, out)
    TextTrajectoryVLA(final.float().eval(), base_proc).save_pretrained(out)
    write_json_atomic(out / ORACLE_FILE, {"oracle_prompt_version": targs.oracle_prompt_version, "refine_prob": targs.refine_prob,
                                          "max_steps": targs.max_steps, "log_history": trainer.state.log_history,
                                          "future_frames": "none (PlanningSample carries no future camera frames)"})


def make_soft_targets(args: EvoDriveConfig, train, teacher_dir: Path, out: Path) -> dict:
    """Stage 2: the soft targets of ``train`` from the teacher in ``teacher_dir``."""
    from dsdrive.training.oracle_teacher import OracleProcessor
    from dsdrive.training.soft_targets import build_soft_targets

    teacher = TextTrajectoryVLA.from_pretrained(teacher_dir)
    oracle = json.loads((teacher_dir / ORACLE_FILE).read_text())
    proc = OracleProcessor.from_text_trajectory(teacher.processor, oracle["oracle_prompt_version"])
    return build_soft_targets(teacher.model, proc, train, out, args.mc_samples, args.mc_dropout, args.soft_target_top_k, args.seed,
                              meta={"teacher": str(teacher_dir)})


def train_student(args: EvoDriveConfig, script: ScriptArguments, train, heldout, train_ids, val_ids, out: Path) -> dict:
    """Stage 3: the student with the switched-on EvoDriveVLA terms; returns the report written to ``eval_heldout.json``."""
    from dsdrive.student.anchor_former import SelfAnchor
    from dsdrive.training.evodrive_trainer import EvoDriveTrainer, evodrive_collator
    from dsdrive.training.soft_targets import EvoDriveItems, load_soft_targets

    sargs = _stage_args(args, out)
    model, proc = _build(sargs, train)
    anchor = SelfAnchor(model, sargs.anchor_temperature) if sargs.self_anchor else None
    if sargs.use_lora:
        model = apply_vla_lora(model, sargs)
    targets = load_soft_targets(sargs.soft_targets, proc.tokenizer) if (sargs.logit_kd or sargs.hidden_kd) else None
    items = EvoDriveItems(TextTrajectoryItems(train, proc).items, train, targets)
    trainer = EvoDriveTrainer(model=model, args=sargs, train_dataset=items,
                              eval_dataset=TextTrajectoryItems(heldout, proc) if heldout else None, data_collator=evodrive_collator(proc),
                              self_anchor=anchor)
    trainer.train()
    metrics = trainer.evaluate() if heldout else {}
    final = export(model, sargs, out)
    TextTrajectoryVLA(final.float().eval(), proc).save_pretrained(out)
    report = {"train_scenes": train_ids, "val_scenes": val_ids, "num_train_samples": len(train), "num_heldout_samples": len(heldout),
              "switches": {k: getattr(sargs, k) for k in ("logit_kd", "hidden_kd", "self_anchor")}, "eval_losses": metrics,
              "log_history": trainer.state.log_history}
    if script.eval_open_loop and heldout:
        from dsdrive.evaluation.open_loop import evaluate_planner
        from dsdrive.planners.text_trajectory import TextTrajectoryPlanner

        planner = TextTrajectoryPlanner(out)
        report["open_loop"] = evaluate_planner(planner, heldout, progress=False)
        report["parse"] = planner.parse_stats
    write_json_atomic(out / "eval_heldout.json", report)
    return report


def parse_args(argv: list[str] | None = None, prog: str = "recipes/evodrive.py"):
    """``--config FILE`` (YAML defaults) + flags -> (ScriptArguments, EvoDriveConfig)."""
    return TrlParser((ScriptArguments, EvoDriveConfig), prog=prog, description=__doc__).parse_args_and_config(argv)


def main(argv: list[str] | None = None, prog: str = "recipes/evodrive.py") -> int:
    """Run the stages that have no output yet under ``--output_dir`` (module docstring). Returns 0.

    Raises:
        ValueError / FileNotFoundError: bad settings or data, before training.
    """
    script, args = parse_args(argv, prog)
    if script.num_threads > 0:
        torch.set_num_threads(script.num_threads)
    train, heldout, train_ids, val_ids, skipped = load_split(script)
    print(f"training: {len(train)} samples from {len(train_ids)} scenes {train_ids}; {skipped} samples of {script.data} skipped "
          "(future not fully valid)")
    root = Path(args.output_dir)
    kd = args.logit_kd or args.hidden_kd
    if kd:
        teacher = root / TEACHER_DIR
        if (teacher / SETTINGS_FILE).is_file() and (teacher / ORACLE_FILE).is_file():
            print(f"stage 1 (oracle teacher): {teacher} exists, skipped")
        else:
            print("stage 1 (oracle teacher): future ego states in its prompt; future frames: none in these samples")
            train_teacher(args, train, teacher)
        soft = root / SOFT_DIR
        from dsdrive.training.soft_targets import SOFT_TARGETS_FILE

        if (soft / SOFT_TARGETS_FILE).is_file():
            print(f"stage 2 (soft targets): {soft} exists, skipped")
        else:
            summary = make_soft_targets(args, train, teacher, soft)
            print(f"stage 2 (soft targets): picked {summary['picked']}, mean CE {summary['mean_ce']}")
        if not args.soft_targets:
            args.soft_targets = str(soft)
    student = root / STUDENT_DIR
    if (student / "eval_heldout.json").is_file():
        print(f"stage 3 (student): {student} exists, skipped")
        return 0
    report = train_student(args, script, train, heldout, train_ids, val_ids, student)
    if "parse" in report:
        print(f"held-out: parse failures {report['parse']['parse_failures']}/{report['parse']['planned']}")
    print(f"saved {student}")
    return 0


__all__ = ["TEACHER_DIR", "SOFT_DIR", "STUDENT_DIR", "ORACLE_FILE", "train_teacher", "make_soft_targets", "train_student", "parse_args", "main"]
