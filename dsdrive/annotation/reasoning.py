"""The chain-of-thought text the student learns, and the student's prompt, from versioned templates.

DSDrive (arXiv 2505.05360) trains its compact student on teacher chain-of-thought in four parts:
scene comprehension, key objects, strategic driving plan (here the GPT-Driver meta-action) and
a human-readable explanation. :func:`render_reasoning` renders that text from any annotator's
:class:`dsdrive.annotation.schema.Annotation` with ``prompts/reasoning/<version>.jinja``;
:func:`render_student_prompt` renders what the student is asked from ``prompts/student/<version>.jinja``
and takes :class:`dsdrive.data.types.PlanningInputs` only, so no ground-truth future can reach it.

Numbers are rounded to 0.1 (filter ``r1``). Templates live in ``prompts/`` (see its README);
a change of wording is a new version file, and the version travels with the rendered text
(:data:`REASONING_TEMPLATE_VERSION`, :func:`template_id`).
"""

from __future__ import annotations

from functools import lru_cache

import jinja2
import numpy as np

from dsdrive.annotation.schema import Annotation
from dsdrive.data.paths import PROMPTS_DIR
from dsdrive.data.types import EGO_STATUS_FIELDS, HISTORY_STEPS, PlanningInputs

REASONING_TEMPLATE_VERSION = "v1"
"""Default version of ``prompts/reasoning/<version>.jinja``."""
STUDENT_PROMPT_VERSION = "v1"
"""Default version of ``prompts/student/<version>.jinja``."""


def r1(x: float) -> str:
    """Format a number rounded to 0.1 (``-0.0`` prints as ``0.0``)."""
    s = f"{float(x):.1f}"
    return "0.0" if s == "-0.0" else s


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )
    env.filters["r1"] = r1
    return env


def template_id(kind: str, version: str) -> str:
    """The id stored with rendered text, e.g. ``reasoning/v1``."""
    return f"{kind}/{version}"


def _template(kind: str, version: str) -> jinja2.Template:
    try:
        return _env().get_template(f"{kind}/{version}.jinja")
    except jinja2.TemplateNotFound as e:
        raise FileNotFoundError(f"{PROMPTS_DIR / kind / (version + '.jinja')}: no such {kind} template version") from e


def render_reasoning(annotation: Annotation | dict, version: str = REASONING_TEMPLATE_VERSION) -> str:
    """The student's chain-of-thought target text for one annotation.

    Args:
        annotation: an :class:`Annotation` or its dict (e.g. the JSON of a dataset's
            ``annotation`` column); a dict is validated against the schema.
        version: template version under ``prompts/reasoning/``.

    Returns:
        Four lines: ``Scene: ...``, ``Key objects: ...`` (at most 3), ``Plan: <meta-action>.``,
        ``Why: ...``.

    Raises:
        pydantic.ValidationError: the dict does not match the schema.
        FileNotFoundError: no template of that version.
    """
    ann = annotation if isinstance(annotation, Annotation) else Annotation.model_validate(annotation)
    ctx = ann.model_dump(mode="python")
    ctx["meta_action_text"] = str(ann.meta_action)
    return _template("reasoning", version).render(**ctx).strip()


def render_student_prompt(inputs: PlanningInputs, version: str = STUDENT_PROMPT_VERSION) -> str:
    """The student's prompt: ego status, navigation command and a 2 s history, as text.

    Args:
        inputs: :class:`PlanningInputs` of the current time (ego frame; no future exists in it).
        version: template version under ``prompts/student/``.

    Raises:
        TypeError: ``inputs`` is not PlanningInputs (e.g. a whole PlanningSample, which carries
            the future).
    """
    if not isinstance(inputs, PlanningInputs):
        raise TypeError(f"render_student_prompt takes PlanningInputs (no future), got {type(inputs).__name__}")
    status = np.asarray(inputs.ego_status, np.float64)
    smask = np.asarray(inputs.ego_status_mask, bool)
    val = {k: (r1(status[j]) if smask[j] and np.isfinite(status[j]) else "unknown") for j, k in enumerate(EGO_STATUS_FIELDS)}
    speed = r1(inputs.speed) if smask[:2].all() and np.isfinite(inputs.speed) else "unknown"
    hist = np.asarray(inputs.ego_history, np.float64)
    hmask = np.asarray(inputs.ego_history_mask, bool)
    history = [f"({r1(hist[k, 0])}, {r1(hist[k, 1])})" if hmask[k] else "n/a" for k in range(HISTORY_STEPS)]
    return _template("student", version).render(
        speed=speed, ax=val["ax"], ay=val["ay"], yaw_rate=val["yaw_rate"], steering=val["steering"],
        history=history, command=inputs.command,
    ).strip()
