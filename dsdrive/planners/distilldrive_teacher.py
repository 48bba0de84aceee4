"""The DistillDrive planning teacher as a planner (name ``"planning_teacher"``). **Privileged.**

The teacher reads ground-truth annotations, including every agent's **future** trajectory
(``PlanningTargets.agent_futures``), exactly as DistillDrive's stage-0 teacher does. It therefore
cannot plan from :class:`~dsdrive.data.types.PlanningInputs` alone: :meth:`compute_trajectory` raises,
and :meth:`compute_trajectories_privileged` takes whole :class:`~dsdrive.data.types.PlanningSample`
objects. ``privileged = True`` tells open-loop evaluation (``dsdrive.evaluation.open_loop.plan_samples``) to
hand it the samples and to mark its rows as privileged: its L2 / collision are an upper
reference for students, not a comparable planner. It never reads cameras, the ego history or the
ego future (the latter only through the losses during training).

Checkpoint folder (written by ``dsdrive planning-teacher`` = ``recipes/planning_teacher.py``, a
``transformers.Trainer`` run): ``config.json`` + ``model.safetensors``
(``PlanningTeacher.save_pretrained``; both vocabularies are buffers inside), plus
``planning_vocabulary.json`` and ``motion_vocabulary.json`` for other users; a Trainer
``checkpoint-N/`` folder loads the same way. Out of its training range (unseen command, classes or
map never seen, 60 m/s) its plans stay finite and within a 1 g kinematic envelope, but the
published teacher has no speed input (DistillDrive: ego status is a target only), so at speeds far
above training it plans as if slower (``tests/test_planner_robustness.py``). A teacher trained with
``kinematic_prior`` (``recipes/configs/planning_teacher/train_kinematic.yaml``) plans a residual on
its own CTRV rollout and keeps the speed (``tests/test_planning_teacher_kinematics.py``).
Waypoints: (6, 3) ``x, y, heading``, ego frame (x forward, y left), metres, radians.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsdrive.planners.base import Planner
from dsdrive.data.types import PlanningInputs, PlanningSample


class PlanningTeacherPlanner(Planner):
    """Planner around a saved :class:`dsdrive.distilldrive.PlanningTeacher`.

    Args:
        checkpoint_dir: folder with ``config.json`` and ``model.safetensors``.
        device: torch device string. rescore: override the config's collision rescoring.

    Raises:
        FileNotFoundError: ``config.json`` is missing in ``checkpoint_dir``.
        ValueError: the weights miss keys of, or carry keys unknown to, the config's model
            (loading is strict, unlike the public code's ``strict=False``).
    """

    name = "planning_teacher"
    privileged = True

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", rescore: bool | None = None):
        from dsdrive.distilldrive import PlanningTeacher

        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / "config.json").is_file():
            raise FileNotFoundError(f"{checkpoint_dir}/config.json: missing (not a planning-teacher checkpoint folder)")
        model, info = PlanningTeacher.from_pretrained(str(checkpoint_dir), local_files_only=True, output_loading_info=True)
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:  # fixed quirk: the public code loads with strict=False, which hides such mismatches
            raise ValueError(f"{checkpoint_dir}/model.safetensors does not match config.json: {bad}")
        self.model = model.to(device).eval()
        self.device, self.rescore = device, rescore

    @classmethod
    def load(cls, checkpoint_dir: str | Path, **kw) -> PlanningTeacherPlanner:
        """Registry entry point (:func:`dsdrive.planners.registry.load_planner`)."""
        return cls(checkpoint_dir, **kw)

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """Not available: the teacher is privileged.

        Raises:
            TypeError: always; use :meth:`compute_trajectories_privileged` with whole samples.
        """
        raise TypeError(
            "planning_teacher is privileged (it reads ground-truth agent futures): call "
            "compute_trajectories_privileged(samples) with PlanningSample objects, not PlanningInputs"
        )

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """Not available (see :meth:`compute_trajectory`)."""
        return self.compute_trajectory(batch[0] if batch else None)  # raises

    @torch.no_grad()
    def compute_trajectories_privileged(self, samples: list[PlanningSample]) -> np.ndarray:
        """(B, 6, 3) float32 waypoints from whole samples (inputs + ground-truth agent futures)."""
        from dsdrive.distilldrive.teacher_inputs import build_teacher_batch

        batch = build_teacher_batch(samples, **self.model.config.batch_kwargs()).to(self.device)
        sel = self.model.select(batch, rescore=self.rescore)
        return sel["waypoints"].float().cpu().numpy().astype(np.float32)
