"""The meta-action a text *states*: one parser for generated reasoning and annotator answers.

Grammar (case-insensitive), GPT-Driver / Agent-Driver vocabulary
(:data:`dsdrive.annotation.schema.BEHAVIOURS` x :data:`~dsdrive.annotation.schema.SPEEDS`)::

    statement := "Plan:" meta "."?               (the reasoning template prompts/reasoning/v1.jinja)
               | '"meta_action"' ":" "{" '"behaviour"' ":" '"' BEHAVIOUR '"' "," '"speed"' ":" '"' SPEED '"' "}"
                                                  (a VLM annotator's JSON answer, either key order)
    meta      := "STOP" [ "with" SPEED ] | BEHAVIOUR "with" SPEED

The first statement in the text counts; a ``Plan:`` line that is not exactly a ``meta`` (other
words, a missing speed) is unparsed rather than guessed. A bare ``STOP`` parses as STOP with CONSTANT (a STOP
is compared by behaviour alone, as ``str(MetaAction)`` does). Used by the consistency metric
(:mod:`dsdrive.evaluation.metrics.reasoning_consistency`), the closed-loop explanations, the
student planner and the hf-llm annotator.
"""

from __future__ import annotations

import json
import re

from dsdrive.annotation.schema import BEHAVIOURS, SPEEDS, MetaAction

_ALT = lambda words: "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # noqa: E731 - longest first
_META = rf"(?P<behaviour>{_ALT(BEHAVIOURS)})(?:\s+with\s+(?P<speed>{_ALT(SPEEDS)}))?"
PLAN_LINE = re.compile(rf"^\s*plan\s*:\s*(?P<body>.*?)\s*$", re.IGNORECASE | re.MULTILINE)
META_EXACT = re.compile(rf"^{_META}\.?$", re.IGNORECASE)
JSON_META = re.compile(r'"meta_action"\s*:\s*(?P<obj>\{[^{}]*\})')


def parse_stated_meta_action(text: str | None) -> MetaAction | None:
    """The meta-action a text states (grammar in the module docstring), or None when it states none.

    Args:
        text: generated reasoning (or an annotator's raw answer); None counts as empty.
    """
    if not text:
        return None
    candidates = []
    m = PLAN_LINE.search(text)
    if m:
        candidates.append((m.start(), "plan", m.group("body")))
    j = JSON_META.search(text)
    if j:
        candidates.append((j.start(), "json", j.group("obj")))
    if not candidates:
        return None
    _, kind, body = min(candidates)
    if kind == "plan":
        e = META_EXACT.match(body.strip())
        if not e:
            return None
        behaviour, speed = e.group("behaviour").upper(), e.group("speed")
        behaviour = " ".join(behaviour.split())
    else:
        try:
            obj = json.loads(body)
        except json.JSONDecodeError:
            return None
        behaviour, speed = str(obj.get("behaviour", "")).upper(), obj.get("speed")
        if behaviour not in BEHAVIOURS:
            return None
    if speed is None:
        if behaviour != "STOP":
            return None
        speed = "CONSTANT"  # STOP is compared by behaviour alone (str(MetaAction) is "STOP")
    speed = " ".join(str(speed).upper().split())
    if speed not in SPEEDS:
        return None
    return MetaAction(behaviour=behaviour, speed=speed)
