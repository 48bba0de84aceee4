"""The annotator interface: rule, local VLM and OpenAI-compatible teachers all fill one schema.

An annotator reads whole :class:`dsdrive.data.types.PlanningSample` objects (annotators may be privileged:
the rule annotator reads the ground-truth future) and returns, per sample and in order, either an
:class:`dsdrive.annotation.schema.Annotation` or an :class:`dsdrive.annotation.schema.AnnotationFailure`
(never nothing: a failure is recorded with its reason and the raw text).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.data.types import PlanningSample


@dataclass
class AnnotatorUsage:
    """Running totals of an annotator's work (tokens are 0 for the rule annotator)."""

    tokens_in: int = 0
    tokens_out: int = 0
    requests: int = 0


class Annotator(ABC):
    """Base class of every annotator.

    Attributes:
        teacher_id: stored in every annotation (e.g. ``rule``, ``qwen-vl:<path>``).
        prompt_version: the prompt/template version stored in every annotation (e.g. ``rule/v1``).
        usage: token and request totals, for the end-of-run summary.
    """

    teacher_id: str = "teacher"
    prompt_version: str = "unversioned"

    def __init__(self) -> None:
        self.usage = AnnotatorUsage()

    @abstractmethod
    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """Annotate a batch; returns one result per sample, in order."""

    def close(self) -> None:  # pragma: no cover - optional resource cleanup
        """Release models, sessions or pools."""
