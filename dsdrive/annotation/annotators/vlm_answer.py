"""The JSON answers a VLM annotator must give, and their conversion to :class:`Annotation`.

Two answer schemas, chosen by the prompt file's header (``schema=cot`` or ``schema=risk``):

* ``cot`` (DSDrive, arXiv 2505.05360, four parts): ``scene_summary`` (scene comprehension),
  ``key_objects`` (camera + 2D box or BEV agent id, category, why), ``meta_action`` +
  ``plan`` (strategic driving plan; meta-action from :data:`dsdrive.annotation.schema.BEHAVIOURS` x
  :data:`dsdrive.annotation.schema.SPEEDS`), ``explanation``; the answer ends in ``waypoints``
  (6 ego-frame (x, y) points at +0.5 ... +3.0 s, metres).
* ``risk`` (RSD, arXiv 2511.14499): ``risks`` ranked (rank 1 = most dangerous), each with a
  risk in [0, 1] and a reason, plus a short summary, meta-action and explanation so that the
  result is a complete :class:`Annotation`.

Validation is contextual (pydantic ``context``): a camera must be one the sample showed, an
agent id one the BEV image/agent list named, a box inside the image the model saw. Boxes are
given in the pixels of the image *as the model saw it* and rescaled to the original image here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dsdrive.annotation.schema import AgentRisk, Annotation, KeyObject, MetaAction


@dataclass
class AnswerContext:
    """What the model was shown, for validating and converting its answer.

    Attributes:
        image_sizes: camera name -> ``(seen_w, seen_h, orig_w, orig_h)`` pixels.
        agent_positions: agent name as shown to the model -> ego-frame ``(x, y)`` metres.
        agent_aliases: name shown to the model (e.g. ``A3``) -> real agent id.
    """

    image_sizes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    agent_positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    agent_aliases: dict[str, str] = field(default_factory=dict)

    def real_id(self, name: str | None) -> str | None:
        return None if name is None else self.agent_aliases.get(name, name)


class AnswerError(ValueError):
    """The model's text is not valid JSON or does not validate; the message is fed back on re-ask."""


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore")
    camera: str | None = None
    box_2d: tuple[float, float, float, float] | None = None
    agent_id: str | None = None
    category: str = Field(min_length=1)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _located(self, info: ValidationInfo):
        ctx: AnswerContext | None = info.context.get("answer") if info.context else None
        if self.agent_id is None and (self.camera is None or self.box_2d is None):
            raise ValueError("each object needs either camera + box_2d, or agent_id")
        if ctx is None:
            return self
        if self.agent_id is not None and self.agent_id not in ctx.agent_positions:
            raise ValueError(f"agent_id {self.agent_id!r} is not one of {sorted(ctx.agent_positions)[:20]}")
        if self.camera is not None:
            if self.camera not in ctx.image_sizes:
                raise ValueError(f"camera {self.camera!r} is not one of {list(ctx.image_sizes)}")
            if self.box_2d is not None:
                x1, y1, x2, y2 = self.box_2d
                w, h = ctx.image_sizes[self.camera][:2]
                if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
                    raise ValueError(f"box_2d {list(self.box_2d)} must satisfy 0<=x1<x2<={w}, 0<=y1<y2<={h}")
        return self


class _RiskObject(_Object):
    risk: float = Field(ge=0.0, le=1.0)
    rank: int = Field(ge=1)


class CotAnswer(BaseModel):
    """DSDrive four-part chain-of-thought answer ending in six waypoints (``schema=cot``)."""

    model_config = ConfigDict(extra="ignore")
    scene_summary: str = Field(min_length=1)
    key_objects: list[_Object]
    meta_action: MetaAction
    plan: str = Field(min_length=1)
    explanation: str = Field(min_length=1)
    waypoints: list[tuple[float, float]]

    @field_validator("waypoints")
    @classmethod
    def _six(cls, v):
        if len(v) != 6:
            raise ValueError(f"waypoints must hold 6 (x, y) points at 0.5 s, got {len(v)}")
        return v


class RiskAnswer(BaseModel):
    """RSD risk ranking answer (``schema=risk``): ranks must be 1..n, each once."""

    model_config = ConfigDict(extra="ignore")
    scene_summary: str = Field(min_length=1)
    risks: list[_RiskObject]
    meta_action: MetaAction
    explanation: str = Field(min_length=1)

    @field_validator("risks")
    @classmethod
    def _ranks(cls, v):
        ranks = sorted(r.rank for r in v)
        if ranks != list(range(1, len(v) + 1)):
            raise ValueError(f"ranks must be 1..{len(v)}, each once; got {ranks}")
        return sorted(v, key=lambda r: r.rank)


SCHEMAS = {"cot": CotAnswer, "risk": RiskAnswer}


def extract_json(text: str) -> dict:
    """The first JSON object in a model's text (``json`` code fences and prose around it allowed).

    Raises:
        AnswerError: no decodable JSON object in ``text``.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    last_error = "no '{' in the answer"
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            last_error = f"invalid JSON at character {exc.pos}: {exc.msg}"
        else:
            if isinstance(obj, dict):
                return obj
        start = text.find("{", start + 1)
    raise AnswerError(f"the answer holds no JSON object ({last_error})")


def _rescaled(camera: str | None, box, ctx: AnswerContext):
    if camera is None or box is None:
        return None
    sw, sh, ow, oh = ctx.image_sizes[camera]
    fx, fy = ow / sw, oh / sh
    return (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)


def parse_answer(
    text: str, schema: str, ctx: AnswerContext, *, sample_id: str, teacher: str, prompt_version: str, hindsight: bool
) -> Annotation:
    """Validate a model's text against ``schema`` and convert it to an :class:`Annotation`.

    Boxes are rescaled from the seen image to the original image pixels; ``position`` of a key
    object named by agent id is that agent's ego-frame (x, y). The ``plan`` of a ``cot`` answer
    is prepended to its explanation (the schema has no separate plan field).

    Raises:
        AnswerError: not JSON, or the JSON fails validation (the message lists the errors).
    """
    data = extract_json(text)
    try:
        answer = SCHEMAS[schema].model_validate(data, context={"answer": ctx})
    except Exception as exc:  # pydantic.ValidationError and validator ValueErrors
        raise AnswerError(f"the JSON does not match the schema: {exc}") from exc

    def key_object(o: _Object) -> KeyObject:
        pos = ctx.agent_positions.get(o.agent_id) if o.agent_id else None
        return KeyObject(
            agent_id=ctx.real_id(o.agent_id), category=o.category, position=pos, camera=o.camera,
            box_2d=_rescaled(o.camera, o.box_2d, ctx), reason=o.reason,
        )

    common = dict(sample_id=sample_id, teacher=teacher, prompt_version=prompt_version, hindsight=hindsight)
    if isinstance(answer, CotAnswer):
        return Annotation(
            **common,
            scene_summary=answer.scene_summary,
            key_objects=[key_object(o) for o in answer.key_objects],
            meta_action=answer.meta_action,
            explanation=f"{answer.plan.strip()} {answer.explanation.strip()}",
            waypoints=[(float(x), float(y)) for x, y in answer.waypoints],
        )
    return Annotation(
        **common,
        scene_summary=answer.scene_summary,
        key_objects=[key_object(o) for o in answer.risks],
        meta_action=answer.meta_action,
        explanation=answer.explanation,
        risks=[
            AgentRisk(
                agent_id=ctx.real_id(r.agent_id), risk=r.risk, rank=r.rank, reason=r.reason, camera=r.camera,
                box_2d=_rescaled(r.camera, r.box_2d, ctx),
            )
            for r in answer.risks
        ],
    )
