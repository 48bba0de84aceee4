"""The distilled student as a :class:`~dsdrive.planners.base.Planner` (name ``"student"``).

Loads a student checkpoint folder (``StudentModel.save_pretrained`` + ``StudentProcessor.save_pretrained``:
config.json, model.safetensors, tokenizer files, processor_config.json) and plans with ONE
forward pass per batch (:meth:`StudentModel.plan`); :meth:`StudentPlanner.explain` and
:meth:`StudentPlanner.plan_and_explain` add the generated chain-of-thought for reports.
Waypoints are (6, 3) ``x, y, heading`` in the ego frame (x forward, y left, metres, radians).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsdrive.planners.base import Planner
from dsdrive.types import PlanningInputs


class StudentPlanner(Planner):
    """Planner around a saved student.

    Args:
        checkpoint_dir: folder written by the distillation recipe.
        device: torch device string.
        max_new_tokens: reasoning length cap for :meth:`explain`.

    Raises:
        FileNotFoundError: the folder lacks config.json / processor_config.json.
    """

    name = "student"

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", max_new_tokens: int = 160):
        from dsdrive.student import StudentModel, StudentProcessor

        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / "config.json").is_file():
            raise FileNotFoundError(f"{checkpoint_dir}/config.json: missing (not a student checkpoint folder)")
        self.model = StudentModel.from_pretrained(str(checkpoint_dir), local_files_only=True).to(device).eval()
        self.processor = StudentProcessor.from_pretrained(checkpoint_dir, config=self.model.config)
        self.device = device
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(cls, checkpoint_dir: str | Path, **kw) -> "StudentPlanner":
        """Registry entry point (:func:`dsdrive.planners.registry.load_planner`)."""
        return cls(checkpoint_dir, **kw)

    def plan(self, batch: list[PlanningInputs]):
        """Full :class:`~dsdrive.student.modeling_student.PlanOutput` (modes, scores, risk map) for a batch."""
        return self.model.plan(self.processor(batch))

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 best-mode waypoints for one input."""
        return self.compute_trajectories([inputs])[0]

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """(B, 6, 3) float32 best-mode waypoints, one forward pass for the whole batch."""
        return self.plan(batch).waypoints.float().cpu().numpy().astype(np.float32)

    def plan_and_explain(self, batch: list[PlanningInputs]) -> tuple[np.ndarray, list[str]]:
        """(B, 6, 3) waypoints and the generated reasoning texts, from one shared prefix."""
        out, ids = self.model.plan_and_explain(self.processor(batch), max_new_tokens=self.max_new_tokens,
                                               eos_token_id=self.processor.tokenizer.eos_token_id)
        return out.waypoints.float().cpu().numpy().astype(np.float32), self.processor.decode_reasoning(ids)

    def explain(self, inputs: PlanningInputs) -> str:
        """Chain-of-thought text for one input (greedy)."""
        return self.plan_and_explain([inputs])[1][0]

    @torch.no_grad()
    def risk_map(self, inputs: PlanningInputs) -> np.ndarray:
        """(H, W) BEV risk map in [0, 1] (grid of :class:`dsdrive.student.bev.BevGrid`)."""
        return self.plan([inputs]).risk_map[0].float().cpu().numpy()
