"""The annotation schema that every annotator fills (rule annotator, local VLM, OpenAI-compatible API).

An annotator annotates one :class:`dsdrive.data.types.PlanningSample` with a scene summary, key objects,
a meta-action, an explanation and a per-agent risk. The student learns the chain-of-thought text
rendered from it by a versioned template in ``prompts/reasoning/`` (see
:mod:`dsdrive.annotation.reasoning`) and the per-agent risk through its BEV RiskHead (RSD).

Meta-actions follow GPT-Driver / Agent-Driver: a behaviour x a speed class.
Positions are in the ego frame (x forward, y left, metres).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BEHAVIOURS = ("STOP", "MOVE FORWARD", "TURN LEFT", "TURN RIGHT", "CHANGE LANE TO LEFT", "CHANGE LANE TO RIGHT")
"""Path part of a meta-action (GPT-Driver / Agent-Driver)."""
SPEEDS = ("CONSTANT", "DECELERATION", "QUICK DECELERATION", "DECELERATION TO ZERO", "ACCELERATION", "QUICK ACCELERATION")
"""Speed part of a meta-action (GPT-Driver / Agent-Driver)."""

Behaviour = Literal["STOP", "MOVE FORWARD", "TURN LEFT", "TURN RIGHT", "CHANGE LANE TO LEFT", "CHANGE LANE TO RIGHT"]
Speed = Literal["CONSTANT", "DECELERATION", "QUICK DECELERATION", "DECELERATION TO ZERO", "ACCELERATION", "QUICK ACCELERATION"]


class MetaAction(BaseModel):
    """A high-level driving decision: behaviour x speed class."""

    model_config = ConfigDict(extra="forbid")
    behaviour: Behaviour
    speed: Speed

    def __str__(self) -> str:
        return self.behaviour if self.behaviour == "STOP" else f"{self.behaviour} with {self.speed}"

    @property
    def index(self) -> int:
        """Class index in ``len(BEHAVIOURS) * len(SPEEDS)`` (for a meta-action head)."""
        return BEHAVIOURS.index(self.behaviour) * len(SPEEDS) + SPEEDS.index(self.speed)


class KeyObject(BaseModel):
    """An object the annotator says matters for the decision.

    ``agent_id`` links it to ``PlanningInputs.agents.ids`` when known (the rule annotator always
    knows it; a VLM names objects by camera + 2D box and is matched later).
    """

    model_config = ConfigDict(extra="forbid")
    agent_id: str | None = None
    category: str
    position: tuple[float, float] | None = Field(None, description="ego frame x, y (m)")
    camera: str | None = None
    box_2d: tuple[float, float, float, float] | None = Field(None, description="x1, y1, x2, y2 pixels")
    reason: str


class AgentRisk(BaseModel):
    """Risk of one object (RSD): a score in [0, 1] and a rank (1 = most dangerous)."""

    model_config = ConfigDict(extra="forbid")
    agent_id: str | None = None
    risk: float = Field(ge=0.0, le=1.0)
    rank: int = Field(ge=1)
    reason: str | None = None
    camera: str | None = None
    box_2d: tuple[float, float, float, float] | None = None


class Annotation(BaseModel):
    """One annotator's annotation of one sample. Every annotator fills this schema.

    Attributes:
        sample_id: the annotated sample.
        teacher: teacher id, e.g. ``rule``, ``qwen-vl:/models/Qwen2.5-VL-7B``.
        prompt_version: version of the prompt/template the annotator used, e.g. ``rule/v1``.
        hindsight: True when the annotator saw the ground-truth future (DSDrive/VLM-AD hindsight).
        scene_summary: scene comprehension, one or two sentences.
        key_objects: objects that matter, most important first.
        meta_action: the decision.
        explanation: human-readable justification.
        risks: per-object risk, rank 1 first.
        waypoints: (6, 2) ego-frame waypoints the answer ends in, when the annotator gives them.
    """

    model_config = ConfigDict(extra="forbid")
    sample_id: str
    teacher: str
    prompt_version: str
    hindsight: bool = False
    scene_summary: str
    key_objects: list[KeyObject] = Field(default_factory=list)
    meta_action: MetaAction
    explanation: str
    risks: list[AgentRisk] = Field(default_factory=list)
    waypoints: list[tuple[float, float]] | None = None

    @field_validator("waypoints")
    @classmethod
    def _six_waypoints(cls, v):
        if v is not None and len(v) != 6:
            raise ValueError(f"waypoints must hold 6 (x, y) points at 0.5 s, got {len(v)}")
        return v


class AnnotationFailure(BaseModel):
    """A sample an annotator could not annotate; recorded, never silently dropped."""

    sample_id: str
    teacher: str
    prompt_version: str
    reason: str
    raw_text: str | None = None
