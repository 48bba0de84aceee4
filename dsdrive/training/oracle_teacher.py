"""EvoDriveVLA's future-aware oracle teacher and its coarse-to-fine refinement (arXiv 2603.09465).

The teacher has the student's architecture (the same Qwen2-VL-family VLM, cameras, pixel budget
and answer format, :mod:`dsdrive.student.text_trajectory_vla`) and a privileged prompt
(``prompts/oracle/<version>.jinja``): the student's prompt plus the *future ego states* at +1, +2,
+3 s (speed in m/s from the ground-truth waypoints' displacement per 0.5 s, heading in rad, ego
frame at t = 0: the states, not the waypoints themselves) and the future camera frames. EvoDriveVLA
shows the current and the +1/+2/+3 s CAM_FRONT; a :class:`~dsdrive.data.types.PlanningSample`
carries no future frames (none of the shared data has them: ``nuscenes-sample-0061`` is one
keyframe, the DriveLM keyframes have no future), so the oracle sees the future ego states only and
its prompt says so ("Future camera frames: none in this sample").

Coarse-to-fine refinement (training): with probability ``refine_prob`` (0.5) per sample, the
teacher's own argmax answer (teacher-forced on the ground truth, one extra no-grad forward pass,
cut at its first eos) is inserted at the end of the user turn as ``Student prediction to refine:
<answer>``, and the cross-entropy is taken on the (ground-truth) answer to that refined prompt.
The same insertion makes the "refined" candidates of the soft targets
(:mod:`dsdrive.training.soft_targets`).

Shapes: B batch, L sequence (left-padded), K answer window, V vocabulary.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2
import numpy as np
import torch

from dsdrive.annotation.reasoning import r1, render_student_prompt
from dsdrive.data.paths import PROMPTS_DIR
from dsdrive.data.types import FUTURE_STEPS, PlanningInputs, PlanningSample
from dsdrive.student.text_trajectory_vla import TextTrajectoryProcessor, f2
from dsdrive.training.evodrive_config import ORACLE_PROMPT_VERSION
from dsdrive.training.text_trajectory_trainer import TextTrajectoryTrainer, answer_window

REFINE_PREFIX = "\nStudent prediction to refine: "
"""Text inserted before the coarse answer at the end of the user turn (EvoDriveVLA's refinement prompt)."""
FUTURE_STATE_TIMES_S = (1.0, 2.0, 3.0)
"""Times of the future ego states the oracle reads (s after the keyframe)."""
NO_FUTURE_FRAMES = "none in this sample (the oracle sees the future ego states only)"
STEP_S = 0.5


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)), undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters.update(r1=r1, f2=f2)
    return env


def future_ego_states(sample: PlanningSample) -> list[tuple[float, float, float]]:
    """``(t s, speed m/s, heading rad)`` at :data:`FUTURE_STATE_TIMES_S` from the ground-truth future.

    Speed at step k is the displacement from step k-1 (the origin before step 0) over 0.5 s;
    heading is the waypoint's heading in the ego frame at t = 0.

    Raises:
        ValueError: the future is not fully valid (naming the sample).
    """
    t = sample.targets
    if not bool(np.all(t.ego_future_mask)):
        raise ValueError(f"sample {sample.sample_id}: ego_future_mask {np.asarray(t.ego_future_mask).tolist()} is not all valid; "
                         "the oracle teacher needs the whole 3 s future")
    fut = np.asarray(t.ego_future, np.float64)
    xy = np.concatenate([np.zeros((1, 2)), fut[:, :2]], 0)
    speed = np.linalg.norm(np.diff(xy, axis=0), axis=1) / STEP_S
    out = []
    for ts in FUTURE_STATE_TIMES_S:
        k = int(round(ts / STEP_S)) - 1
        if not 0 <= k < FUTURE_STEPS:
            raise ValueError(f"future_ego_states: time {ts} s outside the {FUTURE_STEPS}-step future")
        out.append((ts, float(speed[k]), float(fut[k, 2])))
    return out


def render_oracle_prompt(sample: PlanningSample, student_version: str, oracle_version: str = ORACLE_PROMPT_VERSION) -> str:
    """The oracle teacher's prompt: the student's prompt plus the privileged future (module docstring).

    Raises:
        FileNotFoundError: no ``prompts/oracle/<version>.jinja``.
        ValueError: the future is not fully valid.
    """
    try:
        template = _env().get_template(f"oracle/{oracle_version}.jinja")
    except jinja2.TemplateNotFound as e:
        raise FileNotFoundError(f"{PROMPTS_DIR / 'oracle' / (oracle_version + '.jinja')}: no such oracle template version") from e
    return template.render(student_prompt=render_student_prompt(sample.inputs, student_version), future_states=future_ego_states(sample),
                           future_frames=NO_FUTURE_FRAMES).strip()


class OracleProcessor(TextTrajectoryProcessor):
    """The text-trajectory processor with the oracle's privileged prompt (same cameras, answer, layout).

    Args: those of :class:`TextTrajectoryProcessor` plus ``oracle_version`` (``prompts/oracle/``).
    """

    def __init__(self, tokenizer, image_processor, settings, oracle_version: str = ORACLE_PROMPT_VERSION):
        super().__init__(tokenizer, image_processor, settings)
        self.oracle_version = oracle_version

    def oracle_prompt(self, sample: PlanningSample) -> str:
        """:func:`render_oracle_prompt` with this processor's versions."""
        return render_oracle_prompt(sample, self.settings.prompt_version, self.oracle_version)

    def encode_inputs(self, inputs: PlanningInputs, prompt: str | None = None) -> dict:
        """As the base class, but a prompt is required: the oracle never plans from inputs alone.

        Raises:
            TypeError: no ``prompt`` (the oracle's prompt needs the sample's future).
        """
        if prompt is None:
            raise TypeError(f"sample {inputs.sample_id}: the oracle teacher needs the whole PlanningSample (its prompt reads the future)")
        return super().encode_inputs(inputs, prompt)

    def encode_sample(self, sample: PlanningSample) -> dict:
        """The oracle prompt, the cameras and ``answer_ids`` (the ground-truth trajectory text and eos)."""
        item = self.encode_inputs(sample.inputs, self.oracle_prompt(sample))
        ids = self.tokenizer(self.answer_text(sample), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        item["answer_ids"] = np.asarray(ids, np.int64)
        return item

    @classmethod
    def from_text_trajectory(cls, processor: TextTrajectoryProcessor, oracle_version: str = ORACLE_PROMPT_VERSION) -> "OracleProcessor":
        """The oracle processor over a loaded text-trajectory processor's tokenizer and image processor."""
        return cls(processor.tokenizer, processor.image_processor, processor.settings, oracle_version)


# ----------------------------------------------------------------------------- coarse-to-fine
def argmax_answers(logits: torch.Tensor, labels: torch.Tensor, eos_id: int) -> list[list[int]]:
    """The model's teacher-forced argmax answer per row, cut before its first eos.

    Args:
        logits: (B, K, V) logits of the last K positions; labels: (B, K) their labels (-100 off the
            answer); position j's logits predict label j + 1.
    """
    pred = logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    out = []
    for p, t in zip(pred, target):
        ids = p[t != -100].tolist()
        out.append(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    return out


def refine_batch(batch: dict, coarse: list[list[int] | None], prefix_ids: list[int], turn_end_id: int, pad_id: int) -> dict:
    """Insert ``prefix_ids + coarse[i]`` before the user turn's end token of each row i with a coarse answer.

    Args:
        batch: a left-padded batch of :meth:`TextTrajectoryProcessor.collate` (``input_ids``,
            ``attention_mask``, ``labels`` (B, L); image tensors are kept as they are: the image
            tokens do not move relative to each other).
        coarse: per row the answer ids to insert, or None to leave the row as it is.
        prefix_ids: ids of :data:`REFINE_PREFIX`.
        turn_end_id: ``<|im_end|>`` (the last one before the answer closes the user turn).
        pad_id: the pad id.

    Returns:
        A new batch dict (the other keys shared), re-left-padded.

    Raises:
        ValueError: a row has no user-turn end before its answer.
    """
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][i].bool()
        ids, lab = batch["input_ids"][i][real], batch["labels"][i][real]
        if coarse[i] is not None:
            a0 = int(torch.nonzero(lab != -100)[0]) if bool((lab != -100).any()) else len(ids)
            ends = torch.nonzero(ids[:a0] == turn_end_id).flatten()
            if len(ends) == 0:
                raise ValueError(f"refine_batch: row {i} has no user-turn end token {turn_end_id} before its answer")
            e = int(ends[-1])
            extra = torch.tensor(list(prefix_ids) + list(coarse[i]), dtype=ids.dtype)
            ids = torch.cat([ids[:e], extra, ids[e:]])
            lab = torch.cat([lab[:e], torch.full_like(extra, -100), lab[e:]])
        rows.append((ids, lab))
    n = max(len(r[0]) for r in rows)
    b = len(rows)
    out = dict(batch)
    out["input_ids"] = torch.full((b, n), pad_id, dtype=batch["input_ids"].dtype)
    out["attention_mask"] = torch.zeros((b, n), dtype=batch["attention_mask"].dtype)
    out["labels"] = torch.full((b, n), -100, dtype=batch["labels"].dtype)
    for i, (ids, lab) in enumerate(rows):
        out["input_ids"][i, n - len(ids):] = ids
        out["attention_mask"][i, n - len(ids):] = 1
        out["labels"][i, n - len(ids):] = lab
    return {k: v.to(batch["input_ids"].device) if torch.is_tensor(v) else v for k, v in out.items()}


class OracleTeacherTrainer(TextTrajectoryTrainer):
    """The oracle teacher's trainer: the baseline's answer cross-entropy with coarse-to-fine refinement.

    Args (beyond ``Trainer``'s): ``refine_prob`` (0 = the baseline's loss exactly), ``tokenizer``
    (for the refinement prefix and the eos / turn-end / pad ids). Pass ``data_collator`` =
    :meth:`OracleProcessor.collate` and a dataset of :meth:`OracleProcessor.encode_sample` items.
    Logs ``refined_fraction`` (rows refined per batch).

    Raises:
        ValueError: ``refine_prob`` outside [0, 1].
    """

    def __init__(self, *args, refine_prob: float = 0.5, tokenizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= refine_prob <= 1.0:
            raise ValueError(f"OracleTeacherTrainer: refine_prob={refine_prob!r} must lie in [0, 1]")
        if refine_prob > 0 and tokenizer is None:
            raise ValueError("OracleTeacherTrainer: refine_prob > 0 needs the tokenizer")
        self.refine_prob = float(refine_prob)
        self.tok = tokenizer
        if tokenizer is not None:
            self.prefix_ids = tokenizer(REFINE_PREFIX, add_special_tokens=False)["input_ids"]
            self.turn_end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._rng = torch.Generator().manual_seed(int(self.args.seed))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Refine a ``refine_prob`` share of the rows (training only), then the answer cross-entropy."""
        if model.training and self.refine_prob > 0 and "labels" in inputs:
            pick = (torch.rand(inputs["input_ids"].shape[0], generator=self._rng) < self.refine_prob).tolist()
            if any(pick):
                labels = inputs["labels"]
                keep = answer_window(labels)
                with torch.no_grad():
                    out = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
                coarse = argmax_answers(out.logits, labels[:, -keep:], self.tok.eos_token_id)
                inputs = refine_batch(inputs, [c if p else None for c, p in zip(coarse, pick)], self.prefix_ids, self.turn_end_id,
                                      self.tok.pad_token_id)
            self._terms["train"]["refined_fraction"].append(sum(pick) / len(pick))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


__all__ = ["REFINE_PREFIX", "FUTURE_STATE_TIMES_S", "NO_FUTURE_FRAMES", "future_ego_states", "render_oracle_prompt", "OracleProcessor",
           "argmax_answers", "refine_batch", "OracleTeacherTrainer"]
