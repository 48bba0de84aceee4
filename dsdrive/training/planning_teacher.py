"""Train the DistillDrive planning teacher (ground-truth agents + map in; no cameras) on the
training scenes, save it with its vocabularies, and score it open-loop on the held-out scenes.

Run as:
    dsdrive planning-teacher --config recipes/configs/planning_teacher/train_distribution.yaml
    python recipes/planning_teacher.py --config recipes/configs/planning_teacher/train_label.yaml \
        --data outputs/main/planning --output_dir outputs/ckpt/teacher_label --max_steps 400
    python recipes/planning_teacher.py --config recipes/configs/planning_teacher/train_distribution.yaml \
        --save_strategy steps --save_steps 100 --resume_from_checkpoint outputs/ckpt/planning_teacher_distribution/checkpoint-100
    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp_gloo.yaml recipes/planning_teacher.py \
        --config recipes/configs/planning_teacher/train_distribution.yaml        # 2 CPU processes (gloo)

``--config`` sets defaults, flags override (trl ``TrlParser``); every optimisation flag is a
``transformers.TrainingArguments`` field (:mod:`dsdrive.training.planning_teacher_config`), training
runs in :class:`dsdrive.training.planning_teacher_trainer.PlanningTeacherTrainer`. Output folder:
``config.json``, ``model.safetensors`` (both vocabularies inside as buffers),
``planning_vocabulary.json``, ``motion_vocabulary.json``, ``train_log.json`` (the Trainer's
per-step log: loss, every loss term, lr, grad norm), ``eval_heldout.json`` (L2 / collision via
``dsdrive.evaluation.metrics``, with and without collision rescoring, plus the Trainer's eval
metrics). The held-out scenes (``--val_scenes``, default ``dsdrive.data.splits.DEFAULT_VAL_SCENES``)
are never trained on, and the vocabularies are fitted on the training scenes only. Under
``accelerate launch`` every process trains; only the main process writes the outputs.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.data.dataset import load_samples
from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes
from dsdrive.distilldrive.motion_vocabulary import MotionVocabulary
from dsdrive.distilldrive.planning_teacher import PlanningTeacher, PlanningTeacherConfig
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
from dsdrive.distilldrive.teacher_evaluation import evaluate_teacher
from dsdrive.training.planning_teacher_config import PlanningTeacherTrainingConfig
from dsdrive.training.planning_teacher_trainer import PlanningTeacherTrainer


@dataclass
class ScriptArguments:
    """Data and CPU threads."""

    data: str = field(default="outputs/main/planning", metadata={"help": "planning dataset folder (dsdrive build output)"})
    val_scenes: str = field(default=",".join(DEFAULT_VAL_SCENES), metadata={"help": "comma-separated held-out scene ids"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})


def build_teacher(args: PlanningTeacherTrainingConfig, train: list) -> tuple[PlanningTeacher, PlanningVocabulary, MotionVocabulary]:
    """A fresh teacher (seeded by ``args.seed``) with k-means vocabularies fitted on ``train``.

    Raises:
        ValueError: no training sample has a complete future (from the vocabulary fits).
    """
    config = PlanningTeacherConfig(**args.teacher_config_kwargs())
    plan_vocab = PlanningVocabulary.fit(train, modes=config.plan_modes, seed=args.seed)
    motion_vocab = MotionVocabulary.fit(train, modes=config.motion_modes, seed=args.seed)
    torch.manual_seed(args.seed)
    model = PlanningTeacher(config)
    model.set_vocabularies(plan_vocab.anchors, motion_vocab.anchors)
    return model, plan_vocab, motion_vocab


def main(argv: list[str] | None = None) -> int:
    """Train, save and score the planning teacher; returns 0.

    Raises:
        ValueError: no training sample after holding out ``--val_scenes`` (names the folder), or a
            bad config field (:class:`PlanningTeacherTrainingConfig`).
    """
    script, args = TrlParser((ScriptArguments, PlanningTeacherTrainingConfig), prog="dsdrive planning-teacher").parse_args_and_config(argv)
    if script.num_threads > 0:
        torch.set_num_threads(script.num_threads)
    samples = load_samples(script.data)
    train_ids, val_ids = split_scenes([s.scene_id for s in samples], tuple(s for s in script.val_scenes.split(",") if s))
    train = [s for s in samples if s.scene_id in set(train_ids)]
    heldout = [s for s in samples if s.scene_id in set(val_ids)]
    if not train:
        raise ValueError(f"{script.data}: no training sample left ({len(samples)} samples, val_scenes={script.val_scenes!r})")
    print(f"{len(train)} training samples from {train_ids}; {len(heldout)} held-out from {val_ids}")

    model, plan_vocab, motion_vocab = build_teacher(args, train)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"teacher: {n_params / 1e6:.2f} M parameters, variant {model.config.cls_variant}, DQN {'on' if model.dqn else 'off'}")

    trainer = PlanningTeacherTrainer(model=model, args=args, train_dataset=train, eval_dataset=heldout or None)
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    history = [h for h in trainer.state.log_history if "loss" in h]
    if history:
        tail = history[-min(20, len(history)):]
        print(f"loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f} (mean of last {len(tail)} logs: "
              f"{sum(h['loss'] for h in tail) / len(tail):.3f}) in {result.metrics.get('train_runtime', float('nan')):.0f} s")
    eval_metrics = trainer.evaluate() if heldout else {}

    if not trainer.is_world_process_zero():
        return 0
    out = Path(args.output_dir)
    trainer.save_model(str(out))
    plan_vocab.save(out)
    motion_vocab.save(out)
    write_json_atomic(out / "train_log.json", {"script": asdict(script), "args": args.to_dict(), "history": history,
                                               "log_history": trainer.state.log_history}, indent=0)
    model = trainer.accelerator.unwrap_model(trainer.model)
    report = {"train_scenes": train_ids, "val_scenes": val_ids, "privileged": True, "eval_metrics": eval_metrics,
              "rescored": evaluate_teacher(model, heldout, rescore=True),
              "no_rescore": evaluate_teacher(model, heldout, rescore=False)}
    write_json_atomic(out / "eval_heldout.json", report)
    for name in ("rescored", "no_rescore"):
        if report[name]["num_evaluated"]:
            m = report[name]["metrics"]["ALL"]["stp3"]
            print(f"held-out ({report[name]['num_evaluated']} samples, {name}, ST-P3): "
                  f"L2 1s/2s/3s/avg {m['L2']['1s']:.3f}/{m['L2']['2s']:.3f}/{m['L2']['3s']:.3f}/{m['L2']['avg']:.3f} m, "
                  f"collision avg {m['collision']['avg']:.2f} %")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
