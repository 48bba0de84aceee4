"""The distilled student as a :class:`~dsdrive.planners.base.Planner` (name ``"student"``).

Loads a student checkpoint folder (``StudentModel.save_pretrained`` + ``StudentProcessor.save_pretrained``:
config.json, model.safetensors, tokenizer files, processor_config.json) and plans with ONE
forward pass per batch (:meth:`StudentModel.plan`); :meth:`StudentPlanner.explain` and
:meth:`StudentPlanner.plan_and_explain` add the generated chain-of-thought for reports. A
reasoning-first student (``StudentConfig.sequence_order``) generates its reasoning before every
plan (greedy, at most ``max_new_tokens``), so its plans cost a generation each.
Waypoints are (6, 3) ``x, y, heading`` in the ego frame (x forward, y left, metres, radians).

A camera student's checkpoint (``scene_inputs`` cameras / both) also holds its image processor
(``preprocessor_config.json``); it plans from the samples' camera images (``PlanningInputs.cameras``)
and, reading no ground-truth box, reports its risk as the riskiest BEV cells, not per agent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsdrive.annotation.schema import BEHAVIOURS, SPEEDS, MetaAction
from dsdrive.data.types import PlanningInputs
from dsdrive.annotation.meta_action_text import parse_stated_meta_action
from dsdrive.planners.base import Planner
from dsdrive.planners.mode_check import check_modes
from dsdrive.student import StudentModel, StudentProcessor
from dsdrive.student.bev import BevGrid, rasterize_risk


class StudentPlanner(Planner):
    """Planner around a saved student.

    Args:
        checkpoint_dir: folder written by the distillation recipe.
        device: torch device string.
        max_new_tokens: reasoning length cap for :meth:`explain` (and, for a reasoning-first
            student, for every plan); None = the checkpoint's ``config.max_new_tokens``.

    Raises:
        FileNotFoundError: the folder lacks config.json / processor_config.json.
    """

    name = "student"

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", max_new_tokens: int | None = None):
        checkpoint_dir = Path(checkpoint_dir)
        if not (checkpoint_dir / "config.json").is_file():
            raise FileNotFoundError(f"{checkpoint_dir}/config.json: missing (not a student checkpoint folder)")
        self.model = StudentModel.from_pretrained(str(checkpoint_dir), local_files_only=True).to(device).eval()
        self.processor = StudentProcessor.from_pretrained(checkpoint_dir, config=self.model.config)
        self.device = device
        self.max_new_tokens = self.model.config.max_new_tokens if max_new_tokens is None else int(max_new_tokens)

    @classmethod
    def load(cls, checkpoint_dir: str | Path, **kw) -> "StudentPlanner":
        """Registry entry point (:func:`dsdrive.planners.registry.load_planner`)."""
        return cls(checkpoint_dir, **kw)

    def plan(self, batch: list[PlanningInputs], risk_map: bool = True):
        """Full :class:`~dsdrive.student.modeling_student.PlanOutput` (modes, scores, risk map) for a batch
        (reasoning-first: after generating the reasoning with this planner's cap and eos);
        ``risk_map`` False skips the BEV and the RiskHead (``risk_map`` None, the rest unchanged)."""
        if self.model.config.reasoning_first:
            return self.model.plan_and_explain(self.processor(batch), max_new_tokens=self.max_new_tokens,
                                               eos_token_id=self.processor.tokenizer.eos_token_id, risk_map=risk_map)[0]
        return self.model.plan(self.processor(batch), risk_map=risk_map)

    def compute_trajectory(self, inputs: PlanningInputs) -> np.ndarray:
        """(6, 3) float32 best-mode waypoints for one input."""
        return self.compute_trajectories([inputs])[0]

    def compute_trajectories(self, batch: list[PlanningInputs]) -> np.ndarray:
        """(B, 6, 3) float32 best-mode waypoints, one forward pass for the whole batch (plan_first); the
        risk map, which these waypoints never read, is not computed."""
        out = self.plan(batch, risk_map=False)
        return np.stack([self.select_plan(inputs, out, b)[0] for b, inputs in enumerate(batch)]).astype(np.float32)

    def select_plan(self, inputs: PlanningInputs, out, b: int) -> tuple[np.ndarray, dict]:
        """The plan of batch row ``b`` of ``out`` (:class:`PlanOutput`) for ``inputs``: ``(waypoints (6, 3)
        float32 ego frame, extra explanation entries)``; here the model's own plan (best mode or
        expected plan, ``config.plan_selection``) and no entry."""
        return out.waypoints[b].float().cpu().numpy().astype(np.float32), {}

    @torch.no_grad()
    def plan_and_explain_batch(self, batch: list[PlanningInputs]) -> tuple[object, list[str]]:
        """One shared prefix per batch: the :class:`PlanOutput` and the generated reasoning texts."""
        out, ids = self.model.plan_and_explain(self.processor(batch), max_new_tokens=self.max_new_tokens,
                                               eos_token_id=self.processor.tokenizer.eos_token_id)
        return out, self.processor.decode_reasoning(ids)

    def plan_and_explain(self, inputs: PlanningInputs, top_risks: int = 3) -> tuple[np.ndarray, dict]:
        """Plan and explain one input (what the closed-loop report shows at each replanning step).

        Returns:
            ``(waypoints (6, 3) ego frame, explanation)`` where ``explanation`` holds
            ``reasoning`` (the generated chain-of-thought), ``meta_action`` (the one the reasoning
            states on its ``Plan:`` line; when that line is missing or unreadable, the meta-action
            head's argmax; ``meta_action_source`` says which), ``mode_scores`` (the command's 6 mode
            probabilities) and ``risks`` (the ``top_risks`` agents with the highest predicted BEV
            risk on their footprint: ``{"agent_id", "type", "risk"}``; for a camera-only student,
            which reads no agent, the ``top_risks`` riskiest BEV cells: ``{"x", "y", "risk"}``,
            cell centres in the ego frame, metres).
        """
        out, texts = self.plan_and_explain_batch([inputs])
        risk_map = out.risk_map[0].float().cpu().numpy()
        in_text = parse_stated_meta_action(texts[0])
        stated, source = (None if in_text is None else str(in_text)), "reasoning"
        if stated is None and out.meta_action_logits is not None:
            stated, source = meta_action_from_index(int(out.meta_action_logits[0].argmax())), "meta-action head"
        explanation = {
            "reasoning": texts[0],
            "meta_action": stated,
            "meta_action_source": source if stated is not None else None,
            "mode_scores": [round(float(p), 4) for p in out.mode_scores[0].float().cpu()],
            "risks": (agent_risks(inputs, risk_map, self.model.config) if self.model.config.reads_objects
                      else cell_risks(risk_map, self.model.config))[:top_risks],
        }
        waypoints, extra = self.select_plan(inputs, out, 0)
        return waypoints, {**explanation, **extra}

    def explain(self, inputs: PlanningInputs) -> str:
        """Chain-of-thought text for one input (greedy)."""
        return self.plan_and_explain_batch([inputs])[1][0]

    @torch.no_grad()
    def risk_map(self, inputs: PlanningInputs) -> np.ndarray:
        """(H, W) BEV risk map in [0, 1] (grid of :class:`dsdrive.student.bev.BevGrid`)."""
        return self.plan([inputs]).risk_map[0].float().cpu().numpy()


class CheckedStudentPlanner(StudentPlanner):
    """The student whose modes pass PDM-Closed's safety check (name ``"student_checked"``): the
    student proposes its command's modes and scores them; :func:`dsdrive.planners.mode_check.check_modes`
    tracks each for 4 s, scores it with the PDM sub-scores against the inputs' agents at constant
    velocity and the map's road edges, and drives the student's favourite among the modes that
    neither collide nor leave the road (NAVSIM's learned-proposal + rule-check pattern: PDM-Hybrid,
    Hydra-MDP). Reads only :class:`PlanningInputs`; loads any student checkpoint (most useful with
    ``waypoint_prior: idm_modes``, whose modes include a stop). The explanation adds
    ``mode_check`` (:meth:`ModeCheck.explanation`)."""

    name = "student_checked"

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", max_new_tokens: int | None = None,
                 progress_weight: float = 0.0):
        if not progress_weight >= 0:
            raise ValueError(f"CheckedStudentPlanner: progress_weight {progress_weight} must be >= 0")
        super().__init__(checkpoint_dir, device, max_new_tokens)
        self.progress_weight = float(progress_weight)

    def select_plan(self, inputs: PlanningInputs, out, b: int) -> tuple[np.ndarray, dict]:
        """The checked mode of batch row ``b`` (see the class docstring): ``(waypoints (6, 3), {"mode_check": ...})``."""
        modes = out.mode_waypoints[b].float().cpu().numpy()
        check = check_modes(inputs, modes, out.mode_scores[b].float().cpu().numpy(), self.progress_weight)
        return modes[check.best].astype(np.float32), {"mode_check": check.explanation()}


def meta_action_from_index(index: int) -> str:
    """Inverse of :attr:`dsdrive.annotation.schema.MetaAction.index`: class index -> ``"BEHAVIOUR with SPEED"``."""
    return str(MetaAction(behaviour=BEHAVIOURS[index // len(SPEEDS)], speed=SPEEDS[index % len(SPEEDS)]))


def cell_risks(risk_map: np.ndarray, config) -> list[dict]:
    """BEV cells by predicted risk, highest first: ``{"x", "y", "risk"}`` with the cell centre in
    the ego frame (x forward, y left, metres); a camera student's explanation (it reads no agent).

    Args:
        risk_map: (H, W) predicted risk in [0, 1] on the student's BEV grid.
    """
    centres = BevGrid.from_config(config).cell_centres().reshape(-1, 2)
    flat = np.asarray(risk_map, np.float64).reshape(-1)
    return [{"x": round(float(centres[k, 0]), 2), "y": round(float(centres[k, 1]), 2), "risk": round(float(flat[k]), 4)}
            for k in np.argsort(-flat, kind="stable")]


def agent_risks(inputs: PlanningInputs, risk_map: np.ndarray, config) -> list[dict]:
    """Per-agent risk read off a predicted BEV risk map, highest first.

    Each agent's risk is the map's maximum over the cells its oriented box covers
    (:func:`dsdrive.student.bev.rasterize_risk` with risk 1 gives the footprint).

    Args:
        inputs: the current agents (ego frame).
        risk_map: (H, W) predicted risk in [0, 1] on the student's BEV grid.
    """
    grid = BevGrid.from_config(config)
    out = []
    for i, agent_id in enumerate(inputs.agents.ids):
        footprint = rasterize_risk(inputs.agents, {agent_id: 1.0}, grid) > 0
        if footprint.any():
            out.append({"agent_id": agent_id, "type": inputs.agents.types[i], "risk": round(float(risk_map[footprint].max()), 4)})
    return sorted(out, key=lambda r: -r["risk"])

