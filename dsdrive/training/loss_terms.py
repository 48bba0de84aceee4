"""Per-term loss logging shared by dsdrive's ``transformers.Trainer`` subclasses (trl's trainers
report their metrics the same way)."""

from __future__ import annotations

from collections import defaultdict

from transformers import Trainer


class LossTermsTrainer(Trainer):
    """A ``Trainer`` that logs the mean of each loss term since the last log.

    Subclasses append floats to ``self._terms[mode][name]`` (``mode`` is ``"train"`` or ``"eval"``)
    in ``compute_loss``; :meth:`log` adds each term's mean to the logged dict, ``eval_``-prefixed in
    evaluation, and clears the window.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._terms: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss term's mean since the last log (``eval_`` prefix in evaluation)."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for k, vals in self._terms[mode].items():
            if vals:
                logs[prefix + k] = round(sum(vals) / len(vals), 5)
        self._terms[mode].clear()
        super().log(logs, start_time)
