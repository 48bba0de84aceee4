"""Reasoning-plan consistency from the generated text alone: does the meta-action a planner *says*
match the meta-action its waypoints *imply*?

The stated meta-action is parsed from the text only (:func:`parse_stated_meta_action`), never taken
from a meta-action head: a text that states none counts as unparsed, and parse rate and agreement
are reported separately (:func:`reasoning_consistency`):

* ``parse_rate`` = texts stating a meta-action / texts;
* ``agreement`` = parsed texts whose meta-action equals the implied one / parsed texts (behaviour
  and speed class both equal; ``behaviour_agreement`` compares the behaviour only);
* ``agreement_all`` = agreeing texts / all texts (an unparsed text counts as disagreeing).

The stated meta-action's grammar is in :mod:`dsdrive.annotation.meta_action_text` (one parser, shared with
the hf-llm annotator and the student planner). The implied meta-action is
:func:`dsdrive.annotation.meta_action.meta_action_from_trajectory` of the planned (6, 2|3)
waypoints (ego frame: x forward, y left, metres) at the current speed; STOP compares by behaviour
alone, as ``str(MetaAction)`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.annotation.meta_action_text import parse_stated_meta_action
from dsdrive.annotation.schema import MetaAction


def same_meta_action(a: MetaAction, b: MetaAction) -> bool:
    """Equal as stated: same behaviour and speed class; any two STOPs are equal."""
    return str(a) == str(b)


@dataclass
class ConsistencyRecord:
    """One text judged: ``stated`` (or None), ``implied``, ``agrees`` (None when unparsed)."""

    sample_id: str
    stated: str | None
    implied: str
    agrees: bool | None


def reasoning_consistency(texts: list[str], waypoints: np.ndarray, speeds: list[float] | np.ndarray,
                          sample_ids: list[str] | None = None) -> dict:
    """Parse rate and agreement of stated vs implied meta-actions over a set of plans.

    Args:
        texts: N generated reasoning texts.
        waypoints: (N, 6, 2|3) planned waypoints, ego frame (x forward, y left, metres).
        speeds: (N,) current ego speed (m/s) of each sample.
        sample_ids: optional ids for the per-sample records.

    Returns:
        ``{"num_texts", "num_parsed", "parse_rate", "num_agree", "agreement", "agreement_all",
        "behaviour_agreement", "records": [ConsistencyRecord as dict]}``; rates are None when their
        denominator is 0.

    Raises:
        ValueError: lengths differ, or waypoints are not (N, 6, 2|3).
    """
    wp = np.asarray(waypoints, np.float64)
    n = len(texts)
    if wp.ndim != 3 or wp.shape[0] != n or wp.shape[2] not in (2, 3) or len(speeds) != n:
        raise ValueError(f"reasoning_consistency: {n} texts, waypoints {wp.shape} (expected ({n}, T, 2|3)), {len(speeds)} speeds")
    ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(n)]
    records, parsed, agree, agree_b = [], 0, 0, 0
    for sid, text, w, v in zip(ids, texts, wp, speeds):
        implied = meta_action_from_trajectory(w[:, :2], float(v) if v is not None and np.isfinite(v) else None)
        stated = parse_stated_meta_action(text)
        ok = None if stated is None else same_meta_action(stated, implied)
        if stated is not None:
            parsed += 1
            agree += bool(ok)
            agree_b += stated.behaviour == implied.behaviour
        records.append(ConsistencyRecord(sid, None if stated is None else str(stated), str(implied), ok).__dict__)
    rate = (lambda a, b: round(a / b, 4) if b else None)
    return {"num_texts": n, "num_parsed": parsed, "parse_rate": rate(parsed, n), "num_agree": agree,
            "agreement": rate(agree, parsed), "agreement_all": rate(agree, n), "behaviour_agreement": rate(agree_b, parsed),
            "records": records}
