"""Planning KD in student training: the frozen DistillDrive planning teacher -> the student's 18 planning queries.

DistillDrive (ICCV 2025, arXiv 2508.05402; ``shared/research/distilldrive.md`` §KD) distils its
privileged planning teacher (ground-truth agents, their futures and the map in; no camera) into
the student through the 18 planning queries both share (3 commands x 6 modes of ONE planning
vocabulary, query ``i = command * 6 + mode`` on both sides, aligned 1:1). This module is the glue
between :mod:`dsdrive.distilldrive.teacher_cache` and :class:`dsdrive.training.distill_trainer.DistillTrainer`:

1. :func:`load_frozen_teacher`: the teacher checkpoint in eval mode, every parameter frozen.
2. :func:`build_teacher_cache` (``teacher_cache.py``) runs it ONCE over the training samples and
   writes its outputs to disk (resumable; a cache of another teacher is refused), so student
   training never runs the teacher. :func:`attach_teacher_outputs` copies the cached tensors into
   the encoded training items by sample id (keys :data:`TEACHER_BATCH_KEYS`, numpy).
3. :class:`KDDataCollator` stacks them beside the student batch (``teacher_valid`` (B,) marks items
   that carry them; evaluation items carry none, so evaluation losses are the plain student loss).
4. ``DistillTrainer.compute_loss`` pops them (:func:`pop_teacher_outputs`) before ``model(**inputs)``
   (the student never receives them) and adds :func:`planning_kd_terms`:

   * ``kd_feature`` = w_f * MSE(adapter(student ``query_states`` (B, 18, Ds)), teacher ``plan_queries``
     (B, 18, Dt)); the adapter is a Linear Ds -> Dt (:class:`dsdrive.distilldrive.kd.PlanningKD`);
   * ``kd_mode_kl`` = w_kl * KL(softmax(teacher plan logits) || softmax(student mode logits)),
     softmax over EACH command's 6 modes (not over all 18: the command is an input, DistillDrive's
     planning loss also classifies within the command's group), averaged over all 3 groups
     (every group, not only the ground-truth command's) and the batch;
   * ``kd_regression`` = w_r * L1(student waypoints, teacher waypoints) over all 18 modes x 6 steps x
     (x, y), cumulative ego-frame metres.

The :class:`PlanningKD` module (the adapter) is attached to the student as submodule
``planning_kd``: the Trainer's optimizer trains it with the student, training checkpoints keep it
(so ``--resume_from_checkpoint`` resumes it), and :func:`drop_planning_kd` removes it from the
exported student (it is a training-only module; inference never uses it) after writing its weights
to ``planning_kd_adapter.safetensors`` beside the export. With KD on, the student's planning
vocabulary is the teacher's (:func:`setup_planning_kd`), which is what makes the 1:1 pairing hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from dsdrive.distilldrive.kd import PlanningKD
from dsdrive.distilldrive.planning_teacher import PlanningTeacher
from dsdrive.distilldrive.teacher_cache import TeacherCache, build_teacher_cache

TEACHER_BATCH_KEYS = {"plan_queries": "teacher_plan_queries", "plan_logits": "teacher_plan_logits",
                      "plan_waypoints": "teacher_plan_waypoints"}
"""Cache key -> batch key: (18, Dt) query features, (18,) mode logits, (18, 6, 2) waypoints (m, ego frame)."""
VALID_KEY = "teacher_valid"
KD_TERMS = ("kd_feature", "kd_mode_kl", "kd_regression")
"""Logged names of the (already weighted) KD terms."""
ADAPTER_FILE = "planning_kd_adapter.safetensors"


def load_frozen_teacher(path: str | Path) -> PlanningTeacher:
    """The planning teacher from ``path`` in eval mode with every parameter frozen.

    Raises:
        FileNotFoundError: ``path`` has no ``config.json`` (naming it).
    """
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; expected a PlanningTeacher checkpoint (recipes/planning_teacher.py)")
    teacher = PlanningTeacher.from_pretrained(path).eval()
    teacher.requires_grad_(False)
    return teacher


def attach_teacher_outputs(items: list[dict], sample_ids: list[str], cache: TeacherCache) -> int:
    """Copy cached teacher outputs into encoded student items, in place, matched by sample id.

    Args:
        items: encoded items (``EncodedSamples.items``), aligned with ``sample_ids``.
        sample_ids: one id per item; cache: the teacher cache.

    Returns:
        The number of items that got teacher outputs (ids absent from the cache are skipped and
        carry none; :class:`KDDataCollator` marks them ``teacher_valid = False``).

    Raises:
        ValueError: ``items`` and ``sample_ids`` differ in length.
    """
    if len(items) != len(sample_ids):
        raise ValueError(f"attach_teacher_outputs: {len(items)} items but {len(sample_ids)} sample ids")
    hit = [i for i, sid in enumerate(sample_ids) if sid in cache]
    if not hit:
        return 0
    out = cache.get([sample_ids[i] for i in hit])
    for row, i in enumerate(hit):
        for ck, bk in TEACHER_BATCH_KEYS.items():
            items[i][bk] = out[ck][row].float().numpy()
    return len(hit)


class KDDataCollator:
    """Wrap the student collator: add the teacher tensors (B, ...) and ``teacher_valid`` (B,) bool
    when at least one item carries them (missing items get zeros and ``False``)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.base(items)
        have = [TEACHER_BATCH_KEYS["plan_queries"] in x for x in items]
        if not any(have):
            return batch
        ref = next(x for x in items if TEACHER_BATCH_KEYS["plan_queries"] in x)
        for bk in TEACHER_BATCH_KEYS.values():
            batch[bk] = torch.from_numpy(np.stack([x[bk] if h else np.zeros_like(ref[bk]) for x, h in zip(items, have)]))
        batch[VALID_KEY] = torch.tensor(have)
        return batch


def pop_teacher_outputs(inputs: dict) -> dict[str, torch.Tensor]:
    """Remove the teacher tensors from a batch (in place) and return them; {} when there are none."""
    keys = [*TEACHER_BATCH_KEYS.values(), VALID_KEY]
    return {k: inputs.pop(k) for k in keys if k in inputs}


def student_base(model: nn.Module) -> nn.Module:
    """The StudentModel inside DDP (``.module``) and peft (``get_base_model``) wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attach_planning_kd(model: nn.Module, teacher_dim: int, feature_weight: float = 0.5, mode_kl_weight: float = 0.0,
                       regression_weight: float = 0.0) -> PlanningKD:
    """Add a :class:`PlanningKD` (adapter: student hidden size -> ``teacher_dim``) to the student as
    submodule ``planning_kd`` (trainable, on the student's device). Call after LoRA wrapping, so
    peft does not freeze it. Returns the module."""
    base = student_base(model)
    hidden = base.backbone.config.get_text_config().hidden_size
    kd = PlanningKD(hidden, teacher_dim, feature_weight, mode_kl_weight, regression_weight).to(base.device)
    base.add_module("planning_kd", kd)
    return kd


def planning_kd_terms(model: nn.Module, outputs, teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weighted KD terms for one batch.

    Args:
        model: the (possibly wrapped) student carrying ``planning_kd``.
        outputs: its :class:`StudentOutput` (``query_states`` (B, 18, Ds), ``mode_logits`` (B, 3, 6),
            ``waypoints`` (B, 3, 6, 6, 2)).
        teacher: :func:`pop_teacher_outputs` of the batch.

    Returns:
        ``kd_feature``, ``kd_mode_kl``, ``kd_regression`` and ``total`` (scalars, weighted).

    Raises:
        ValueError: the student has no ``planning_kd`` module (KD not set up) or a tensor is missing.
    """
    kd = getattr(student_base(model), "planning_kd", None)
    if kd is None:
        raise ValueError("planning_kd_terms: the batch carries teacher outputs but the student has no planning_kd module "
                         "(call attach_planning_kd / setup_planning_kd)")
    if outputs.query_states is None:
        raise ValueError("planning_kd_terms: StudentOutput.query_states is None")
    b = outputs.query_states.shape[0]
    t = outputs.waypoints.shape[-2]
    res = kd(outputs.query_states.float(), teacher[TEACHER_BATCH_KEYS["plan_queries"]],
             outputs.mode_logits.reshape(b, -1).float(), teacher[TEACHER_BATCH_KEYS["plan_logits"]],
             outputs.waypoints.reshape(b, -1, t, 2).float(), teacher[TEACHER_BATCH_KEYS["plan_waypoints"]],
             valid=teacher.get(VALID_KEY))
    return {"kd_feature": res["feature"], "kd_mode_kl": res["mode_kl"], "kd_regression": res["regression"], "total": res["total"]}


def drop_planning_kd(model: nn.Module, out_dir: str | Path | None = None) -> nn.Module:
    """Remove ``planning_kd`` from the student before export, first writing its weights to
    ``out_dir/planning_kd_adapter.safetensors`` when ``out_dir`` is given. Returns ``model``."""
    base = student_base(model)
    kd = getattr(base, "planning_kd", None)
    if kd is not None:
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in kd.state_dict().items()}, str(Path(out_dir) / ADAPTER_FILE))
        del base.planning_kd
    return model


def setup_planning_kd(model: nn.Module, args, train_samples: list, train_items: list[dict], collator):
    """Everything ``recipes/distill.py`` needs when ``args.planning_kd_teacher`` is set.

    Loads the frozen teacher, installs its planning vocabulary into the student (1:1 query
    pairing), builds / reuses the teacher cache for the TRAINING samples (``args.planning_kd_cache``
    or ``OUTPUT_DIR/planning_kd_cache``), attaches the cached outputs to ``train_items``, attaches
    the KD module and returns the wrapped collator.

    Raises:
        ValueError: the teacher's vocabulary shape differs from the student's (from
            ``set_planning_vocabulary``), or the cache folder belongs to another teacher.
    """
    teacher = load_frozen_teacher(args.planning_kd_teacher)
    base = student_base(model)
    same = bool(torch.allclose(base.anchors.cpu(), teacher.plan_anchors.cpu(), atol=1e-4))
    base.set_planning_vocabulary(teacher.plan_anchors.cpu().numpy())
    cache_dir = args.planning_kd_cache or str(Path(args.output_dir) / "planning_kd_cache")
    cache = build_teacher_cache(teacher, train_samples, cache_dir)
    n = attach_teacher_outputs(train_items, [s.sample_id for s in train_samples], cache)
    attach_planning_kd(model, teacher.config.hidden_dim, args.kd_feature_weight, args.kd_mode_kl_weight, args.kd_regression_weight)
    print(f"planning KD: teacher {args.planning_kd_teacher} (D={teacher.config.hidden_dim}, {teacher.config.cls_variant}); "
          f"vocabulary {'already equal to' if same else 'replaced by'} the teacher's; cache {cache_dir}: {n}/{len(train_items)} "
          f"training samples; weights feature {args.kd_feature_weight}, mode KL {args.kd_mode_kl_weight}, regression {args.kd_regression_weight}")
    del teacher
    return KDDataCollator(collator)
