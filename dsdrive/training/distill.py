"""Distil the annotators' labels (and optionally the DistillDrive planning teacher) into the compact
student: DSDrive dual head + DistillDrive vocabulary + RSD RiskHead.

Run as (``dsdrive distill`` and ``recipes/distill.py`` are the same command, :func:`main`):
    dsdrive distill --config recipes/configs/tiny/distill.yaml
    dsdrive distill --config recipes/configs/tiny/distill.yaml --max_steps 20 --output_dir outputs/ckpt/s
    dsdrive distill --config recipes/configs/tiny/distill.yaml --val_scenes none --output_dir outputs/ckpt/all
    dsdrive distill --config recipes/configs/tiny/distill.yaml --sequence_order reasoning_first   # plan reads the reasoning
    dsdrive distill --config recipes/configs/tiny/distill.yaml --init_from outputs/ckpt/pretrained_metadrive   # warm start
    python recipes/distill.py --config recipes/configs/tiny/distill.yaml --max_steps 4 --save_steps 2 \
        --save_strategy steps --output_dir outputs/ckpt/s --resume_from_checkpoint outputs/ckpt/s/checkpoint-2
    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp_gloo.yaml recipes/distill.py \
        --config recipes/configs/tiny/distill.yaml --max_steps 20            # 2 CPU processes (gloo)
    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/distill.py \
        --config recipes/configs/qwen2.5-0.5b/distill_qlora.yaml            # QLoRA, N GPUs

``--config`` sets defaults, flags override (trl ``TrlParser``). Data: an annotated planning
dataset (``dsdrive annotate`` / ``dsdrive merge`` output; unannotated samples still train the
waypoint and meta-action heads).

Held-out scenes (``--val_scenes``): every scene named must be in ``--data`` (else a ``ValueError``
naming the folder, the scenes expected and present; never a substitute split); they are never
trained on, and the tokenizer (tiny backbone) and the planning vocabulary are fitted on the
training scenes only. ``--val_scenes none`` trains on every scene of ``--data`` and evaluates
nothing. The scene ids and sample counts used are printed.

Output folder: the student checkpoint (config.json, model.safetensors with the vocabulary buffer,
tokenizer files, processor_config.json; LoRA merged), loadable by
``dsdrive.planners.student.StudentPlanner``, plus ``eval_heldout.json`` (held-out losses and
open-loop L2 / collision via :mod:`dsdrive.evaluation.open_loop`). QLoRA runs also keep the adapter
checkpoint in ``adapter/`` and export the student by loading the backbone again in full precision
and merging the adapters into that copy (QLoRA, Dettmers et al. 2023: 4-bit base weights cannot
hold an exact merge). Bad settings or data fail before training with a ``ValueError`` naming the
field / file (:mod:`dsdrive.training.distill_config`). ``--planning_kd_teacher DIR`` adds DistillDrive
planning KD from the planning teacher (recipes/configs/tiny/distill_kd.yaml;
:mod:`dsdrive.training.planning_kd`). ``--token_kd_weight W --teacher_logprobs ANN`` adds token-level
KD of the reasoning from an annotator's cached top-k log-probs (:mod:`dsdrive.training.token_kd`;
the embedded tiny student takes the annotator's tokenizer with ``--tokenizer_path``). Under
``accelerate launch`` every process trains; only the main process writes the export and the evaluation.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import TrlParser

from dsdrive.annotation.reasoning import render_reasoning
from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.data.dataset import load_dataset_dir, load_samples
from dsdrive.data.perception_noise import PerceptionNoiseItems, load_perception_noise
from dsdrive.data.splits import DEFAULT_VAL_SCENES, NO_SCENES, parse_scene_list, split_scenes
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
from dsdrive.student import StudentDataCollator, StudentModel, StudentProcessor
from dsdrive.student.backbone import load_backbone, tiny_qwen2_config
from dsdrive.student.lora import apply_lora, merge_lora
from dsdrive.student.tokenizer import build_tokenizer
from dsdrive.student.waypoint_head import KINEMATIC_PRIORS
from dsdrive.training.distill_config import DistillConfig, check_annotations, resolve_backbone_path
from dsdrive.training.distill_trainer import DistillTrainer, EncodedSamples
from dsdrive.training.planning_kd import drop_planning_kd, setup_planning_kd
from dsdrive.training.token_kd import load_token_kd_cache

VAL_HINT = (f"pass --val_scenes {NO_SCENES} to train on every scene without evaluation, "
            "or --val_scenes ID,ID naming scenes of this folder")


@dataclass
class ScriptArguments:
    """Data, held-out split and evaluation of the distill stage (the training settings are :class:`DistillConfig`)."""

    data: str = field(default="outputs/main/planning_annotated", metadata={"help": "planning dataset folder (annotated)"})
    val_scenes: str = field(default=",".join(DEFAULT_VAL_SCENES), metadata={
        "help": f"comma-separated held-out scene ids, all of which must be in --data; '{NO_SCENES}' = train on every scene, no evaluation"})
    train_data: str | None = field(default=None, metadata={"help": "training dataset (e.g. dense 10 Hz samples); None = --data. Its held-out scenes are dropped; evaluation stays on --data"})
    max_train_samples: int = field(default=0, metadata={"help": "cap on training samples (0 = all)"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    eval_open_loop: bool = field(default=True, metadata={"help": "score the saved student open-loop on the held-out scenes"})


class PerceptionNoiseEpochs(TrainerCallback):
    """Tells a :class:`~dsdrive.data.perception_noise.PerceptionNoiseItems` training set the epoch at
    every epoch start, so each epoch draws fresh noise (also when the data loader's workers or
    distributed sampler would not forward accelerate's ``set_epoch``)."""

    def __init__(self, dataset: PerceptionNoiseItems):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))


def build_student(args: DistillConfig, train) -> tuple[StudentModel, StudentProcessor]:
    """The student and its processor: a local backbone (+ its tokenizer) or the embedded tiny Qwen2;
    a camera student (``scene_inputs`` cameras / both) from :func:`dsdrive.student.camera_student.build_camera_student`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.scene_inputs != "objects":
        from dsdrive.student.camera_student import build_camera_student

        return build_camera_student(args, train)
    if args.init_from:
        return warm_start_student(args)

    if args.backbone_path:
        path = resolve_backbone_path(args.backbone_path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if args.quantization and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # 4-bit weights load onto the current device
        torch.manual_seed(args.seed)
        backbone = load_backbone(path, quantization=args.quantization)  # fp32 master weights (bf16 = autocast)
    else:
        if args.tokenizer_path:  # e.g. the hf-llm annotator's tokenizer, so that token KD aligns
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_path, local_files_only=True)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer = build_tokenizer(train, vocab_size=args.tokenizer_vocab_size)
        cfg = tiny_qwen2_config(len(tokenizer), hidden_size=args.tiny_hidden_size, layers=args.tiny_layers, heads=args.tiny_heads,
                                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        torch.manual_seed(args.seed)
        backbone = AutoModelForCausalLM.from_config(cfg)
    model = StudentModel.from_backbone(backbone, vocabulary=PlanningVocabulary.fit(train, seed=args.seed),
                                       backbone_name_or_path=args.backbone_path or "embedded-tiny-qwen2", **args.student_config_kwargs())
    processor = StudentProcessor(tokenizer, model.config, args.max_prompt_tokens, args.max_reasoning_tokens)
    return model, processor


WARM_START_FIELDS = ("scene_dim", "scene_layers", "max_agents", "max_map", "bev_height", "bev_width", "risk_layers",
                     "risk_points", "use_meta_action_head", "waypoint_prior", "idm_prior_min_speed", "use_ego_status", "planning_cvae",
                     "sequence_order")
"""StudentConfig fields a warm start must share with the recipe (they shape the weights or the inputs)."""


def warm_start_student(args: DistillConfig) -> tuple[StudentModel, StudentProcessor]:
    """The student of ``args.init_from`` (a ``dsdrive distill`` output folder): its weights, tokenizer
    and planning vocabulary, with this recipe's loss weights, plan selection and reasoning cap, to be
    fine-tuned (e.g. pretrained on MetaDrive procedural scenes, then trained on nuScenes).

    Raises:
        ValueError: a field of :data:`WARM_START_FIELDS` differs between the checkpoint and the recipe,
            or the recipe asks for another backbone than the checkpoint's; the message names the folder,
            field and both values.
    """
    path = Path(args.init_from)
    model = StudentModel.from_pretrained(str(path), local_files_only=True)
    want = args.student_config_kwargs()
    for name in WARM_START_FIELDS:
        if getattr(model.config, name) != want[name]:
            raise ValueError(f"{path}/config.json: init_from checkpoint has {name}={getattr(model.config, name)!r}, "
                             f"but the recipe sets {name}={want[name]!r}; train with the checkpoint's value or start fresh")
    if args.backbone_path and model.config.backbone_name_or_path != args.backbone_path:
        raise ValueError(f"{path}/config.json: init_from checkpoint has backbone_name_or_path={model.config.backbone_name_or_path!r}, "
                         f"but the recipe sets backbone_path={args.backbone_path!r}")
    for name in ("loss_weights", "plan_selection", "max_new_tokens"):
        setattr(model.config, name, want[name])
    processor = StudentProcessor.from_pretrained(path, config=model.config)
    processor.max_prompt_tokens, processor.max_reasoning_tokens = args.max_prompt_tokens, args.max_reasoning_tokens
    print(f"warm start from {path}: its weights, tokenizer ({len(processor.tokenizer)} tokens) and planning vocabulary")
    return model, processor


def export_qlora(model, args: DistillConfig, adapter_dir: Path) -> StudentModel:
    """Full-precision StudentModel with the QLoRA adapters merged: the backbone is loaded again
    unquantized from ``backbone_path``, the adapters and fully trained heads are loaded from
    ``adapter_dir`` (peft ``modules_to_save``) and the planning vocabulary buffer is copied."""
    from peft import PeftModel

    trained = model.get_base_model()
    backbone = load_backbone(resolve_backbone_path(args.backbone_path), quantization=None)
    fresh = StudentModel.from_backbone(backbone, backbone_name_or_path=args.backbone_path, **args.student_config_kwargs())
    fresh.anchors.copy_(trained.anchors.detach().cpu())
    return merge_lora(PeftModel.from_pretrained(fresh, adapter_dir))


def enable_gradient_checkpointing(model: StudentModel, args: DistillConfig) -> None:
    """Activation checkpointing on the backbone only (the student's heads are small); the Trainer's
    own switch is turned off because StudentModel itself does not implement it."""
    if args.gradient_checkpointing or getattr(args, "activation_checkpointing", False):
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        args.gradient_checkpointing = False
        if hasattr(args, "activation_checkpointing"):  # transformers >= 5 name of the same switch
            args.activation_checkpointing = False


def load_training_data(script: ScriptArguments, args: DistillConfig):
    """The training and held-out samples of ``script.data`` (training from ``script.train_data`` if set).

    The split is by scene: training takes every sample of the training scenes, augmented ones
    included (agent-as-ego and mirrored, ``dsdrive build --agents-as-ego --mirror``); the held-out
    scenes give only their original samples (recorded ego, not mirrored) for evaluation, and none
    of their samples, original or augmented, is ever trained on.

    Returns:
        (train samples, held-out samples, training scene ids, held-out scene ids); the held-out
        lists are empty for ``--val_scenes none``.

    Raises:
        ValueError: a scene of ``--val_scenes`` is not in ``--data`` (:func:`dsdrive.data.splits.split_scenes`,
            ``strict``), the training split is empty, annotations are missing
            (:func:`dsdrive.training.distill_config.check_annotations`), or ``--val_scenes none``
            with an evaluation strategy other than ``no``. All before any model is built.
        FileNotFoundError: ``--data`` / ``--train_data`` is not a planning dataset.
    """
    columns = load_dataset_dir(script.data).column_names
    samples = load_samples(script.data)
    train_ids, val_ids = split_scenes([s.scene_id for s in samples], parse_scene_list(script.val_scenes), strict=True,
                                      where=f"{script.data} (--val_scenes {script.val_scenes})", hint=VAL_HINT)
    if not val_ids and str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no":
        raise ValueError(f"--val_scenes {script.val_scenes!r} holds out no scene, so there is nothing to evaluate, "
                         f"but eval_strategy={str(getattr(args.eval_strategy, 'value', args.eval_strategy))!r}; pass --eval_strategy no")
    train = [s for s in samples if s.scene_id in set(train_ids)]
    heldout = [s for s in samples if s.scene_id in set(val_ids) and not s.augmented]
    if script.train_data:  # train elsewhere (denser sampling), never on a held-out scene
        columns = load_dataset_dir(script.train_data).column_names
        dense = load_samples(script.train_data)
        train = [s for s in dense if s.scene_id not in set(val_ids)]
        train_ids = sorted({s.scene_id for s in train})
        if not train:
            raise ValueError(f"{script.train_data}: no training sample outside the held-out scenes {sorted(val_ids)}")
    if script.max_train_samples:
        train = train[: script.max_train_samples]
    if not train:
        raise ValueError(f"{script.data}: no training sample left ({len(samples)} samples, val_scenes={script.val_scenes!r})")
    check_annotations(columns, [s.annotation for s in train], script.train_data or script.data, args)
    return train, heldout, train_ids, val_ids


def parse_args(argv: list[str] | None = None, prog: str = "dsdrive distill") -> tuple[ScriptArguments, DistillConfig]:
    """``--config FILE`` (YAML defaults) + flags -> (ScriptArguments, DistillConfig) with trl's ``TrlParser``.

    Raises:
        ValueError: a bad config value (:class:`dsdrive.training.distill_config.DistillConfig`).
        SystemExit: ``--help`` (code 0) or an unknown flag (code 2), as argparse does.
    """
    import argparse

    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The docstring's line breaks kept, and every flag's default shown."""

    parser = TrlParser((ScriptArguments, DistillConfig), prog=prog, description=__doc__, formatter_class=Formatter)
    return parser.parse_args_and_config(argv)


def main(argv: list[str] | None = None, prog: str = "dsdrive distill") -> int:
    """``dsdrive distill`` / ``recipes/distill.py``: load and split the data, build the student,
    train, export to ``--output_dir`` and evaluate on the held-out scenes. Returns 0.

    Raises:
        ValueError / FileNotFoundError: bad settings or data, before training (see :func:`load_training_data`).
    """
    script, args = parse_args(argv, prog)
    if script.num_threads > 0:
        torch.set_num_threads(script.num_threads)
    train, heldout, train_ids, val_ids = load_training_data(script, args)
    n_ann = sum(s.annotation is not None for s in train)
    n_aug = sum(s.augmented for s in train)
    print(f"training: {len(train)} samples ({n_ann} annotated) from {len(train_ids)} scenes {train_ids}; "
          f"{n_aug} of them augmented (agent-as-ego, mirrored or on-policy)")
    print(f"held out: {len(heldout)} samples from {len(val_ids)} scenes {val_ids} (recorded ego, un-mirrored only)" if val_ids
          else f"held out: no scene (--val_scenes {script.val_scenes}); nothing is evaluated")

    model, processor = build_student(args, train)
    n_all = sum(p.numel() for p in model.parameters())
    enable_gradient_checkpointing(model, args)
    if args.use_lora:
        model = apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout,
                           [t for t in args.lora_target_modules.split(",") if t], args.quantization)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"student: {n_all / 1e6:.2f} M parameters, {n_train / 1e6:.2f} M trainable, LoRA {'on' if args.use_lora else 'off'}")

    cache, cross = None, False
    if args.reasoning_template != "v1":  # another reasoning template version (prompts/reasoning/), e.g. v2: meta-action first
        processor.reasoning_fn = functools.partial(render_reasoning, version=args.reasoning_template)
        print(f"reasoning template: reasoning/{args.reasoning_template}")
    if args.token_kd_weight > 0 or args.teacher_tokens_target:  # token-level KD from the annotator's cached top-k (dsdrive.training.token_kd)
        cache, cross, line = load_token_kd_cache(args, train, processor.tokenizer)
        print(line if args.token_kd_weight > 0 else line.split(" (")[0] + ": learnt as hard targets only (teacher_tokens_target, token KD weight 0)")
    elif args.teacher_logprobs:
        print(f"token KD off (token_kd_weight 0): --teacher_logprobs {args.teacher_logprobs} is not read")
    train_set, collator = EncodedSamples(train, processor, teacher_logprobs=cache, cross_tokenizer=cross), StudentDataCollator(processor)
    if getattr(model.config, "waypoint_prior", "cv_gate") in KINEMATIC_PRIORS and args.waypoint_prior_fit and args.use_ego_status:  # fitted on the training samples, as the vocabulary
        from dsdrive.student.waypoint_head import fit_prior_blend_on_items

        fit = fit_prior_blend_on_items(model.waypoint_head, train_set.items)
        print(f"kinematic prior blend (CV, CTRV, lane[, lane IDM]) fitted on the training samples: mean L2 {fit['l2_uniform']} -> {fit['l2_fitted']} m, "
              f"weights per command {fit['weights']}")
    if args.planning_kd_teacher:  # DistillDrive planning KD from the frozen teacher's cached outputs (dsdrive.training.planning_kd)
        collator = setup_planning_kd(model, args, train, train_set.items, collator)
    callbacks = []
    if args.perception_noise != "none":  # training-time perception noise (dsdrive.data.perception_noise), a fresh draw per epoch
        noise = load_perception_noise(args.perception_noise)
        train_set = PerceptionNoiseItems(train, train_set.items, processor.encode_inputs, noise)
        callbacks.append(PerceptionNoiseEpochs(train_set))
        print(f"training inputs: {noise.label}, a fresh draw per epoch (targets and held-out evaluation: ground truth)")
    trainer = DistillTrainer(model=model, args=args, train_dataset=train_set, callbacks=callbacks,
                             eval_dataset=EncodedSamples(heldout, processor) if heldout else None, data_collator=collator)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    metrics = trainer.evaluate() if heldout else {}

    if not trainer.is_world_process_zero():
        return 0
    out = Path(args.output_dir)
    if args.quantization is not None:  # 4/8-bit base weights cannot hold an exact merge
        model.save_pretrained(out / "adapter")
        print(f"QLoRA: adapter checkpoint in {out / 'adapter'}; merging it into a full-precision copy of {args.backbone_path}")
        final = export_qlora(model, args, out / "adapter")
    else:
        final = merge_lora(model) if args.use_lora else model
    drop_planning_kd(final, out).float().save_pretrained(out)  # the KD adapter is training-only: saved beside, not exported
    processor.save_pretrained(out)
    report = {"train_scenes": train_ids, "val_scenes": val_ids, "num_train_samples": len(train), "num_heldout_samples": len(heldout),
              "eval_losses": metrics, "log_history": trainer.state.log_history}
    if script.eval_open_loop and heldout:
        from dsdrive.evaluation.open_loop import evaluate_planner
        from dsdrive.planners.student import StudentPlanner

        report["open_loop"] = evaluate_planner(StudentPlanner(out), heldout, progress=False)
        m = report["open_loop"]["metrics"]["ALL"]["stp3"]
        print(f"held-out ({report['open_loop']['num_evaluated']} samples, ST-P3): L2 1s/2s/3s/avg "
              f"{m['L2']['1s']:.3f}/{m['L2']['2s']:.3f}/{m['L2']['3s']:.3f}/{m['L2']['avg']:.3f} m, collision avg {m['collision']['avg']:.2f} %")
    write_json_atomic(out / "eval_heldout.json", report)
    print(f"saved {out}")
    return 0
