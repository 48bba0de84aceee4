"""Train the DistillDrive planning teacher (ground-truth agents + map in; no cameras) on the
training scenes, save it with its vocabularies, and score it open-loop on the held-out scenes.

Run as:
    python recipes/planning_teacher.py --config recipes/configs/planning_teacher/train_label.yaml
    python recipes/planning_teacher.py --config recipes/configs/planning_teacher/train_distribution.yaml \
        --data outputs/main/planning --output_dir outputs/ckpt/teacher_dist --max_steps 400

``--config`` sets defaults, flags override (trl ``TrlParser``). Output folder: ``config.json``,
``model.safetensors`` (both vocabularies inside as buffers), ``planning_vocabulary.json``,
``motion_vocabulary.json``, ``train_log.json`` (per-step losses), ``eval_heldout.json``
(L2 / collision via ``dsdrive.evaluation.metrics``, with and without collision rescoring). The held-out
scenes (``--val_scenes``, default ``dsdrive.data.splits.DEFAULT_VAL_SCENES``) are never trained on,
and the vocabularies are fitted on the training scenes only.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import torch
from trl import TrlParser

from dsdrive.data.dataset import load_samples
from dsdrive.distilldrive import PlanningTeacher, PlanningTeacherConfig
from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.distilldrive.motion_vocabulary import MotionVocabulary
from dsdrive.distilldrive.trainer import evaluate_teacher, fit_teacher
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
from dsdrive.data.splits import DEFAULT_VAL_SCENES, split_scenes


@dataclass
class ScriptArguments:
    """Data, output and optimisation."""

    data: str = field(default="outputs/main/planning", metadata={"help": "planning dataset folder (dsdrive build output)"})
    output_dir: str = field(default="outputs/ckpt/planning_teacher", metadata={"help": "checkpoint folder to write"})
    val_scenes: str = field(default=",".join(DEFAULT_VAL_SCENES), metadata={"help": "comma-separated held-out scene ids"})
    max_steps: int = field(default=300, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=16, metadata={"help": "samples per step (DistillDrive: 48 per GPU x 8)"})
    learning_rate: float = field(default=6e-4, metadata={"help": "peak lr, cosine decay (DistillDrive stage 0: 6e-4)"})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=25.0, metadata={"help": "gradient clipping norm"})
    seed: int = field(default=0, metadata={"help": "torch / shuffling / k-means seed"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})


@dataclass
class ModelArguments:
    """Teacher size and loss variant (the rest keeps PlanningTeacherConfig's DistillDrive defaults)."""

    hidden_dim: int = field(default=256, metadata={"help": "feature size D"})
    agent_layers: int = field(default=4, metadata={"help": "agent time-encoder layers"})
    num_heads: int = field(default=8, metadata={"help": "attention heads"})
    ffn_dim: int = field(default=1024, metadata={"help": "FFN width"})
    num_layers: int = field(default=2, metadata={"help": "agent/ego/map interaction layers"})
    pos_feats: int = field(default=64, metadata={"help": "sine features per coordinate"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    cls_variant: str = field(default="label", metadata={"help": "'label' (one-hot focal) or 'distribution' (soft top-3 KL)"})
    dqn_weight: float = field(default=0.0, metadata={"help": "DQN state-optimisation weight; 0 = off (stage0_label)"})
    use_cvae: bool = field(default=False, metadata={"help": "add the conditional VAE op"})
    use_ego_history: bool = field(default=True, metadata={"help": "temp_gnn: ego queries attend to the past ego poses"})
    max_agents: int = field(default=150, metadata={"help": "nearest agents kept within 55 m (DistillDrive: 150)"})
    map_classes: str = field(default="lane_centerline,lane_divider,road_edge,ped_crossing", metadata={"help": "map classes read"})


def main(argv: list[str] | None = None) -> int:
    script, margs = TrlParser((ScriptArguments, ModelArguments)).parse_args_and_config(argv)
    torch.manual_seed(script.seed)
    if script.num_threads > 0:
        torch.set_num_threads(script.num_threads)
    val = tuple(s for s in script.val_scenes.split(",") if s)
    samples = load_samples(script.data)
    train_ids, val_ids = split_scenes([s.scene_id for s in samples], val)
    train = [s for s in samples if s.scene_id in set(train_ids)]
    heldout = [s for s in samples if s.scene_id in set(val_ids)]
    print(f"{len(train)} training samples from {train_ids}; {len(heldout)} held-out from {val_ids}")

    cfg = asdict(margs)
    cfg["map_classes"] = [c for c in cfg["map_classes"].split(",") if c]
    config = PlanningTeacherConfig(**cfg, seed=script.seed)
    plan_vocab = PlanningVocabulary.fit(train, modes=config.plan_modes, seed=script.seed)
    motion_vocab = MotionVocabulary.fit(train, modes=config.motion_modes, seed=script.seed)
    model = PlanningTeacher(config)
    model.set_vocabularies(plan_vocab.anchors, motion_vocab.anchors)
    model.to(script.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"teacher: {n_params / 1e6:.2f} M parameters, variant {config.cls_variant}, DQN {'on' if model.dqn else 'off'}")

    history = fit_teacher(model, train, script.max_steps, script.batch_size, script.learning_rate,
                          script.weight_decay, script.max_grad_norm, script.seed)
    first, last = history[0], history[-1]
    tail = history[-min(20, len(history)):]
    print(f"loss {first['loss']:.3f} -> {last['loss']:.3f} (mean of last {len(tail)}: "
          f"{sum(h['loss'] for h in tail) / len(tail):.3f}) in {last['seconds']:.0f} s")

    out = script.output_dir
    model.save_pretrained(out)
    plan_vocab.save(out)
    motion_vocab.save(out)
    write_json_atomic(f"{out}/train_log.json", {"script": asdict(script), "model": asdict(margs), "history": history}, indent=0)

    report = {"val_scenes": val_ids, "privileged": True,
              "rescored": evaluate_teacher(model, heldout, rescore=True),
              "no_rescore": evaluate_teacher(model, heldout, rescore=False)}
    write_json_atomic(f"{out}/eval_heldout.json", report)
    for name in ("rescored", "no_rescore"):
        m = report[name]["metrics"]["ALL"]["stp3"]
        print(f"held-out ({report[name]['num_evaluated']} samples, {name}, ST-P3): "
              f"L2 1s/2s/3s/avg {m['L2']['1s']:.3f}/{m['L2']['2s']:.3f}/{m['L2']['3s']:.3f}/{m['L2']['avg']:.3f} m, "
              f"collision avg {m['collision']['avg']:.2f} %")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
