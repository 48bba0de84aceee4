"""Fine-tune the camera student's VLM to write the waypoints as text: the text-trajectory VLA baseline.

Run as:
    python recipes/configs/tiny-vl/build_data.py --out /tmp/V/camera_planning
    accelerate launch recipes/text_trajectory.py --config recipes/configs/tiny-vl/text_trajectory.yaml
    python recipes/text_trajectory.py --config recipes/configs/tiny-vl/text_trajectory.yaml --max_steps 4 --output_dir /tmp/tt
    dsdrive open-loop --planner text_trajectory_vla --checkpoint outputs/ckpt/text_trajectory_tiny_vl --data DIR

GPT-Driver (arXiv 2310.01415) and EvoDriveVLA (arXiv 2603.09465) plan by decoding waypoints as text;
this stage gives that baseline the camera student's VLM, cameras and prompt
(:mod:`dsdrive.student.text_trajectory_vla`) and trains it on the ground-truth future written with
``prompts/trajectory/<version>.jinja`` (:mod:`dsdrive.training.text_trajectory_trainer`).
``--config`` sets defaults, flags override (trl ``TrlParser``; fields in
:mod:`dsdrive.training.text_trajectory_config`).

Data: a planning dataset with cameras (``dsdrive build --source nuscenes``, or the tiny-vl
``build_data.py``); a sample trains when its future is fully valid (the others are counted and
skipped: DriveLM keyframes have no future). ``--val_scenes`` holds scenes out as in ``dsdrive
distill`` (every named scene must be in ``--data``; ``none`` = no evaluation).

Output folder: the VLM with its LoRA adapters merged (QLoRA: merged into a full-precision copy of
``backbone_path``; the adapter is kept in ``adapter/``), its tokenizer and image processor,
``text_trajectory.json`` (loadable by :class:`dsdrive.planners.text_trajectory.TextTrajectoryPlanner`)
and ``eval_heldout.json`` (log history; with held-out scenes, open-loop L2 / collision and the
parse-failure rate of the answers).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from trl import TrlParser

from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.data.dataset import load_samples
from dsdrive.data.splits import DEFAULT_VAL_SCENES, NO_SCENES, parse_scene_list, split_scenes
from dsdrive.student.text_trajectory_vla import TextTrajectoryProcessor, TextTrajectoryVLA, format_trajectory, split_digits
from dsdrive.training.text_trajectory_config import TextTrajectoryConfig
from dsdrive.training.text_trajectory_trainer import TextTrajectoryItems, TextTrajectoryTrainer

LANGUAGE_MODEL = r"model\.language_model\."
VISION_BLOCKS = r"model\.visual\.blocks\."
VISION_LORA_TARGETS = ("qkv", "proj")


@dataclass
class ScriptArguments:
    """Data, held-out split and evaluation of the text-trajectory stage."""

    data: str = field(default="outputs/main/planning_cameras", metadata={"help": "planning dataset folder with cameras"})
    val_scenes: str = field(default=",".join(DEFAULT_VAL_SCENES), metadata={
        "help": f"comma-separated held-out scene ids, all in --data; '{NO_SCENES}' = train on every scene, no evaluation"})
    max_train_samples: int = field(default=0, metadata={"help": "cap on training samples (0 = all)"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    eval_open_loop: bool = field(default=True, metadata={"help": "score the saved baseline open-loop on the held-out scenes"})


def load_split(script: ScriptArguments):
    """(train, held-out, train scene ids, held-out scene ids): samples with a fully valid future only.

    Raises:
        ValueError: a ``--val_scenes`` scene is not in ``--data``, or no training sample has a future.
    """
    samples = load_samples(script.data)
    train_ids, val_ids = split_scenes([s.scene_id for s in samples], parse_scene_list(script.val_scenes), strict=True,
                                      where=f"{script.data} (--val_scenes {script.val_scenes})",
                                      hint=f"pass --val_scenes {NO_SCENES} or name scenes of this folder")
    full = [s for s in samples if bool(np.all(s.targets.ego_future_mask))]
    train = [s for s in full if s.scene_id in set(train_ids)]
    heldout = [s for s in full if s.scene_id in set(val_ids) and not s.augmented]
    if script.max_train_samples:
        train = train[: script.max_train_samples]
    if not train:
        raise ValueError(f"{script.data}: no training sample with a fully valid future ({len(samples)} samples, {len(full)} with one, "
                         f"val_scenes={script.val_scenes!r})")
    return train, heldout, train_ids, val_ids, len(samples) - len(full)


def build_vla(args: TextTrajectoryConfig, train) -> tuple[torch.nn.Module, TextTrajectoryProcessor]:
    """The VLM (a local Qwen2-VL-family backbone, 4/8-bit with ``quantization``, or the embedded tiny
    Qwen2.5-VL with a BPE trained on the training prompts and answers, digits split as Qwen's
    tokenizer splits them: :func:`~dsdrive.student.text_trajectory_vla.split_digits`) and its processor."""
    from transformers import AutoProcessor

    from dsdrive.student.backbone import load_backbone
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl
    from dsdrive.student.tokenizer import student_corpus
    from dsdrive.student.vision_backbone import check_vision_backbone
    from dsdrive.training.distill_config import resolve_backbone_path

    settings = args.settings()
    if args.backbone_path:
        path = resolve_backbone_path(args.backbone_path)
        vl_processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        if args.quantization and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        model = load_backbone(path, quantization=args.quantization)
    else:
        corpus = student_corpus(train) + [format_trajectory(s.targets.ego_future, settings.trajectory_version) for s in train]
        heads = args.tiny_heads
        model, vl_processor = build_tiny_qwen_vl(None, settings.min_pixels, settings.max_pixels, corpus=corpus,
                                                 vocab_size=args.tokenizer_vocab_size, seed=args.seed, hidden_size=args.tiny_hidden_size,
                                                 layers=args.tiny_layers, heads=heads, kv_heads=2 if heads % 2 == 0 else heads)
        split_digits(vl_processor.tokenizer)  # digits one token each, as Qwen's tokenizer
    check_vision_backbone(model)
    tokenizer = vl_processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:  # a hub Qwen2.5-VL may keep it on the processor only
        tokenizer.chat_template = getattr(vl_processor, "chat_template", None)
    if args.vision_tower == "frozen":
        model.model.visual.requires_grad_(False)
    return model, TextTrajectoryProcessor(tokenizer, vl_processor.image_processor, settings)


def lora_pattern(args: TextTrajectoryConfig) -> str:
    """peft ``target_modules`` regex: the language model's ``lora_target_modules`` (+ the vision
    blocks' qkv / proj with ``vision_tower`` lora); the LLM's names never reach the vision tower."""
    names = "|".join(re.escape(t) for t in args.target_modules())
    pattern = rf"{LANGUAGE_MODEL}.*\.({names})$"
    if args.vision_tower == "lora":
        pattern = rf"(?:{pattern})|(?:{VISION_BLOCKS}.*\.({'|'.join(VISION_LORA_TARGETS)})$)"
    return pattern


def apply_vla_lora(model, args: TextTrajectoryConfig):
    """Wrap the VLM with LoRA adapters (:func:`lora_pattern`); a quantized backbone is first prepared
    with :func:`dsdrive.student.lora.prepare_kbit_model` (frozen embeddings kept in bf16).

    Raises:
        ValueError: no module matches the targets.
    """
    from peft import LoraConfig, get_peft_model

    pattern = lora_pattern(args)
    if not any(re.match(pattern, n) for n, _ in model.named_modules()):
        raise ValueError(f"TextTrajectoryConfig: lora_target_modules={args.lora_target_modules!r} matches no language-model module")
    if args.quantization:
        from dsdrive.student.lora import prepare_kbit_model

        prepare_kbit_model(model, model)
    return get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                            target_modules=pattern, bias="none"))


def export(model, args: TextTrajectoryConfig, out: Path):
    """The deployable VLM: adapters merged (QLoRA: into a full-precision reload of ``backbone_path``,
    the adapter saved in ``out/adapter`` first); full fine-tuning: the model itself."""
    if not args.use_lora:
        return model
    if args.quantization is None:
        return model.merge_and_unload()
    from peft import PeftModel

    from dsdrive.student.backbone import load_backbone
    from dsdrive.training.distill_config import resolve_backbone_path

    model.save_pretrained(out / "adapter")
    fresh = load_backbone(resolve_backbone_path(args.backbone_path), quantization=None)
    return PeftModel.from_pretrained(fresh, out / "adapter").merge_and_unload()


def parse_args(argv: list[str] | None = None, prog: str = "recipes/text_trajectory.py"):
    """``--config FILE`` (YAML defaults) + flags -> (ScriptArguments, TextTrajectoryConfig)."""
    return TrlParser((ScriptArguments, TextTrajectoryConfig), prog=prog, description=__doc__).parse_args_and_config(argv)


def main(argv: list[str] | None = None, prog: str = "recipes/text_trajectory.py") -> int:
    """Load and split the data, build the VLM, train, export to ``--output_dir``, evaluate. Returns 0.

    Raises:
        ValueError / FileNotFoundError: bad settings or data, before training.
    """
    script, args = parse_args(argv, prog)
    if script.num_threads > 0:
        torch.set_num_threads(script.num_threads)
    train, heldout, train_ids, val_ids, skipped = load_split(script)
    print(f"training: {len(train)} samples from {len(train_ids)} scenes {train_ids}; {skipped} samples of {script.data} "
          "skipped (future not fully valid)")
    print(f"held out: {len(heldout)} samples from {len(val_ids)} scenes {val_ids}" if val_ids else "held out: none; nothing is evaluated")
    torch.manual_seed(args.seed)
    model, processor = build_vla(args, train)
    n_all = sum(p.numel() for p in model.parameters())
    if args.use_lora:
        model = apply_vla_lora(model, args)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"VLM: {n_all / 1e6:.2f} M parameters, {n_train / 1e6:.3f} M trainable, LoRA {'on' if args.use_lora else 'off'}, "
          f"vision tower {args.vision_tower}")
    trainer = TextTrajectoryTrainer(model=model, args=args, train_dataset=TextTrajectoryItems(train, processor),
                                    eval_dataset=TextTrajectoryItems(heldout, processor) if heldout else None, data_collator=processor.collate)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    metrics = trainer.evaluate() if heldout else {}
    if not trainer.is_world_process_zero():
        return 0
    out = Path(args.output_dir)
    final = export(model, args, out)
    TextTrajectoryVLA(final.float().eval(), processor).save_pretrained(out)
    report = {"train_scenes": train_ids, "val_scenes": val_ids, "num_train_samples": len(train), "num_heldout_samples": len(heldout),
              "eval_losses": metrics, "log_history": trainer.state.log_history}
    if script.eval_open_loop and heldout:
        from dsdrive.evaluation.open_loop import evaluate_planner
        from dsdrive.planners.text_trajectory import TextTrajectoryPlanner

        planner = TextTrajectoryPlanner(out)
        report["open_loop"] = evaluate_planner(planner, heldout, progress=False)
        report["parse"] = planner.parse_stats
        print(f"held-out: parse failures {planner.num_failures}/{planner.planned} (constant-velocity fallback)")
    write_json_atomic(out / "eval_heldout.json", report)
    print(f"saved {out}")
    return 0


__all__ = ["ScriptArguments", "load_split", "build_vla", "lora_pattern", "apply_vla_lora", "export", "parse_args", "main"]
