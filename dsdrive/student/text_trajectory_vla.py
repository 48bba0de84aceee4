"""The text-trajectory VLA baseline: the camera student's VLM fine-tuned to write the waypoints as text.

GPT-Driver (Mao et al. 2023, arXiv 2310.01415) and EvoDriveVLA (arXiv 2603.09465) plan by decoding
the future waypoints as text tokens. This baseline reads what the camera student reads: a Qwen2-VL
family VLM (the embedded tiny Qwen2.5-VL by default, :mod:`dsdrive.student.tiny_vl`), the same
cameras at the same pixel budget through the same image path
(:func:`dsdrive.student.vision_backbone.encode_cameras` / :func:`~dsdrive.student.vision_backbone.collate_cameras`:
the pixel values are identical) and the same prompt (``prompts/student/<version>.jinja``, inputs only),
and answers with the trajectory text of ``prompts/trajectory/<version>.jinja``::

    [(x1,y1),(x2,y2),(x3,y3),(x4,y4),(x5,y5),(x6,y6)]     metres, ego frame (x forward, y left), 2 decimals

It is the comparison point of the student's dual head, which plans in one forward pass.

Chat layout (the backbone tokenizer's Qwen2-VL chat template), one user turn and the answer::

    user:      ("CAM_NAME:" <|vision_start|> <|image_pad|> x n <|vision_end|>) per present camera, then the prompt
    assistant: the trajectory text, then the tokenizer's eos (``<|im_end|>``)

``n`` is the camera's merged-token count (one per 28 x 28 pixels of the resized image). Batches are
left-padded (generation appends on the right); labels are -100 everywhere but the answer.
The parse (:func:`parse_trajectory`) is strict: exactly six ``(x,y)`` pairs in one bracket; anything
else is a parse failure, which :class:`TextTrajectoryVLA.plan` reports per row (NaN waypoints,
``parsed`` False) and :class:`dsdrive.planners.text_trajectory.TextTrajectoryPlanner` replaces by a
constant-velocity plan and counts.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import numpy as np
import torch

from dsdrive.annotation.reasoning import STUDENT_PROMPT_VERSION, render_student_prompt
from dsdrive.data.paths import PROMPTS_DIR
from dsdrive.data.types import CAMERA_NAMES, FUTURE_STEPS, PlanningInputs, PlanningSample
from dsdrive.geometry import trajectory_yaw
from dsdrive.student.configuration_student import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from dsdrive.student.vision_backbone import collate_cameras, encode_cameras, set_pixel_budget, token_pixels

TRAJECTORY_TEMPLATE_VERSION = "v1"
"""Default version of ``prompts/trajectory/<version>.jinja``."""
SETTINGS_FILE = "text_trajectory.json"
"""The baseline's settings in a checkpoint folder (beside the VLM's config, weights and processor files)."""
_NUM = r"[-+]?\d+(?:\.\d*)?"
_PAIR = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_LIST = re.compile(rf"\[\s*(?:\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*)+\]")


def f2(x: float) -> str:
    """A number to 2 decimals (``-0.00`` printed ``0.00``): the template's filter."""
    s = f"{float(x):.2f}"
    return "0.00" if s == "-0.00" else s


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)), undefined=jinja2.StrictUndefined, autoescape=False)
    env.filters["f2"] = f2
    return env


def split_digits(tokenizer):
    """Make a byte-level BPE tokenizer split numbers into single digits before BPE, as Qwen2's
    pre-tokenizer does (``\\p{N}`` one at a time), so a trajectory costs as many tokens as with a real
    Qwen tokenizer ([(4.65,-0.01),...]: about 13 tokens per waypoint). Changes ``tokenizer`` in place
    (saved with it in tokenizer.json) and returns it."""
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    return tokenizer


def format_trajectory(xy, version: str = TRAJECTORY_TEMPLATE_VERSION) -> str:
    """The answer text of a (6, 2+) ego-frame trajectory (x forward, y left, metres; columns past y ignored).

    Raises:
        ValueError: not (6, >= 2) or not finite (naming the shape / value).
        FileNotFoundError: no ``prompts/trajectory/<version>.jinja``.
    """
    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[0] != FUTURE_STEPS or xy.shape[1] < 2:
        raise ValueError(f"format_trajectory: waypoints of shape {xy.shape}; expected ({FUTURE_STEPS}, 2+)")
    if not np.isfinite(xy[:, :2]).all():
        raise ValueError(f"format_trajectory: non-finite waypoint {xy[~np.isfinite(xy[:, :2]).all(1)][0, :2].tolist()}")
    try:
        template = _env().get_template(f"trajectory/{version}.jinja")
    except jinja2.TemplateNotFound as e:
        raise FileNotFoundError(f"{PROMPTS_DIR / 'trajectory' / (version + '.jinja')}: no such trajectory template version") from e
    return template.render(waypoints=[(float(x), float(y)) for x, y in xy[:, :2]]).strip()


def parse_trajectory(text: str, steps: int = FUTURE_STEPS) -> np.ndarray | None:
    """Parse the first bracketed list of ``(x,y)`` pairs in ``text`` back to (steps, 3) float32.

    Headings come from the positions (:func:`dsdrive.geometry.trajectory_yaw`, start yaw 0: the
    ego frame). Returns None (a parse failure) when there is no such list, when it holds another
    number of pairs than ``steps``, or when a value is not finite.
    """
    m = _LIST.search(text or "")
    if m is None:
        return None
    pairs = _PAIR.findall(m.group(0))
    if len(pairs) != steps:
        return None
    xy = np.asarray(pairs, np.float64)
    if not np.isfinite(xy).all():
        return None
    return np.concatenate([xy, trajectory_yaw(xy)[:, None]], 1).astype(np.float32)


@dataclass
class TextTrajectorySettings:
    """What the baseline reads and writes (saved as ``text_trajectory.json``).

    Attributes:
        cameras: camera names read, in this order (the camera student's default: six nuScenes cameras).
        min_pixels / max_pixels: per-image pixel budget (28 x 28 pixels = one vision token).
        allow_missing_cameras: False = a missing camera / image is an error naming sample and camera;
            True = that camera is left out of the user turn.
        prompt_version: ``prompts/student/<version>.jinja`` (the camera student's prompt).
        trajectory_version: ``prompts/trajectory/<version>.jinja`` (the answer format).
        max_new_tokens: generation cap (the v1 answer is 40-60 tokens of a Qwen tokenizer).

    Raises:
        ValueError: unknown / repeated camera, pixel budget outside ``0 < min <= max``, or
            ``max_new_tokens`` < 1 (naming the field and value).
    """

    cameras: list[str] = field(default_factory=lambda: list(CAMERA_NAMES))
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_missing_cameras: bool = False
    prompt_version: str = STUDENT_PROMPT_VERSION
    trajectory_version: str = TRAJECTORY_TEMPLATE_VERSION
    max_new_tokens: int = 96

    def __post_init__(self):
        self.cameras = list(self.cameras)
        if not self.cameras or any(c not in CAMERA_NAMES for c in self.cameras) or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"TextTrajectorySettings: cameras={self.cameras!r}; expected distinct names among {CAMERA_NAMES}")
        if not 0 < int(self.min_pixels) <= int(self.max_pixels):
            raise ValueError(f"TextTrajectorySettings: min_pixels={self.min_pixels}, max_pixels={self.max_pixels}; need 0 < min <= max")
        if int(self.max_new_tokens) < 1:
            raise ValueError(f"TextTrajectorySettings: max_new_tokens={self.max_new_tokens}; must be >= 1")


class TextTrajectoryProcessor:
    """PlanningInputs / PlanningSamples -> left-padded VLM batches (module docstring for the layout).

    Args:
        tokenizer: the VLM's tokenizer (chat template with image items, pad and eos tokens).
        image_processor: the VLM's image processor (Qwen2VLImageProcessor); its pixel budget is set
            to the settings'.
        settings: :class:`TextTrajectorySettings`.

    Batch keys: ``input_ids`` / ``attention_mask`` (B, L) long, ``pixel_values`` (patches of the
    present cameras of the B samples, D) float32, ``image_grid_thw`` (images, 3) long; with targets
    ``labels`` (B, L) long (-100 but on the answer and its eos).

    Raises:
        ValueError: a tokenizer without pad / eos token or chat template.
    """

    def __init__(self, tokenizer, image_processor, settings: TextTrajectorySettings):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None or not tokenizer.chat_template:
            raise ValueError("TextTrajectoryProcessor: the tokenizer needs pad and eos tokens and a chat template")
        self.tokenizer, self.image_processor, self.settings = tokenizer, image_processor, settings
        set_pixel_budget(image_processor, settings.min_pixels, settings.max_pixels)
        self._pad_token = "<|image_pad|>"

    def prompt_text(self, inputs: PlanningInputs) -> str:
        """The student's prompt for ``inputs`` (no future)."""
        return render_student_prompt(inputs, self.settings.prompt_version)

    def answer_text(self, sample: PlanningSample) -> str:
        """The target text: the ground-truth future formatted by the trajectory template.

        Raises:
            ValueError: the future is not fully valid (naming the sample).
        """
        t = sample.targets
        if not bool(np.all(t.ego_future_mask)):
            raise ValueError(f"sample {sample.sample_id}: ego_future_mask {np.asarray(t.ego_future_mask).tolist()} is not all valid; "
                             "the text-trajectory target needs the whole 3 s future")
        return format_trajectory(t.ego_future, self.settings.trajectory_version)

    def encode_inputs(self, inputs: PlanningInputs, prompt: str | None = None) -> dict:
        """Cameras (headers only, :func:`encode_cameras`) and the prompt ids of the user turn up to
        the assistant header, image pads expanded to each camera's token count. ``prompt`` replaces
        the student's prompt text (None = :meth:`prompt_text`; the EvoDriveVLA oracle teacher passes
        its privileged prompt, :mod:`dsdrive.training.oracle_teacher`)."""
        cams = encode_cameras(inputs, self.settings, self.image_processor)
        per = token_pixels(self.image_processor)
        content = []
        for name, present in zip(self.settings.cameras, cams["camera_mask"]):
            if present:
                content += [{"type": "text", "text": f"{name}:"}, {"type": "image"}]
        content.append({"type": "text", "text": self.prompt_text(inputs) if prompt is None else prompt})
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        counts = [int(w // per) * int(h // per) for (w, h), present in zip(cams["camera_image_size"], cams["camera_mask"]) if present]
        parts = text.split(self._pad_token)
        if len(parts) != len(counts) + 1:
            raise ValueError(f"sample {inputs.sample_id}: the chat template wrote {len(parts) - 1} image pads for {len(counts)} images")
        text = parts[0] + "".join(self._pad_token * n + p for n, p in zip(counts, parts[1:]))
        cams["input_ids"] = np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
        return cams

    def encode_sample(self, sample: PlanningSample) -> dict:
        """:meth:`encode_inputs` plus ``answer_ids``: the trajectory text and the eos."""
        item = self.encode_inputs(sample.inputs)
        ids = self.tokenizer(self.answer_text(sample), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        item["answer_ids"] = np.asarray(ids, np.int64)
        return item

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Left-pad B encoded items (prompt + answer when every item has one) and decode their images."""
        with_answer = all("answer_ids" in x for x in items)
        seqs = [np.concatenate([x["input_ids"], x["answer_ids"]]) if with_answer else x["input_ids"] for x in items]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(items), n), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(items), n, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        for i, (x, s) in enumerate(zip(items, seqs)):
            ids[i, n - len(s):] = torch.from_numpy(s)
            mask[i, n - len(s):] = 1
            if with_answer:
                labels[i, n - len(x["answer_ids"]):] = torch.from_numpy(x["answer_ids"])
        cams = collate_cameras(items, self.image_processor)
        grid = cams["image_grid_thw"]
        keep = cams["camera_mask"].reshape(-1)
        sizes = grid.prod(-1).tolist()
        chunks = torch.split(cams["pixel_values"], sizes)
        out = {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat([c for c, k in zip(chunks, keep) if k]),
               "image_grid_thw": grid[keep]}
        if with_answer:
            out["labels"] = labels
        return out

    def __call__(self, items) -> dict[str, torch.Tensor]:
        """Batch PlanningInputs (prompt only), PlanningSamples (with the answer) or encoded dicts."""
        enc = []
        for x in items:
            if isinstance(x, PlanningSample):
                enc.append(self.encode_sample(x))
            elif isinstance(x, PlanningInputs):
                enc.append(self.encode_inputs(x))
            elif isinstance(x, dict):
                enc.append(x)
            else:
                raise TypeError(f"TextTrajectoryProcessor: cannot batch {type(x).__name__}")
        return self.collate(enc)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """(B, T) generated ids -> texts, each cut at its first eos."""
        eos = self.tokenizer.eos_token_id
        rows = [r[: r.index(eos)] if eos in r else r for r in ids.tolist()]
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]

    def save_pretrained(self, directory: str | Path) -> None:
        """Tokenizer, image processor and ``text_trajectory.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        self.image_processor.save_pretrained(str(directory))
        (directory / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TextTrajectoryProcessor":
        """Load what :meth:`save_pretrained` wrote.

        Raises:
            FileNotFoundError: ``text_trajectory.json`` or ``preprocessor_config.json`` missing (naming it).
        """
        from transformers import AutoImageProcessor, AutoTokenizer

        directory = Path(directory)
        for name in (SETTINGS_FILE, "preprocessor_config.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: missing (not a text-trajectory VLA checkpoint)")
        settings = TextTrajectorySettings(**json.loads((directory / SETTINGS_FILE).read_text()))
        return cls(AutoTokenizer.from_pretrained(str(directory), local_files_only=True),
                   AutoImageProcessor.from_pretrained(str(directory), local_files_only=True), settings)


@dataclass
class TextPlan:
    """Plans decoded as text: ``waypoints`` (B, 6, 3) float32 ego frame (NaN rows where the parse
    failed), ``parsed`` (B,) bool, ``texts`` the decoded answers, ``ids`` (B, T) generated ids."""

    waypoints: np.ndarray
    parsed: np.ndarray
    texts: list[str]
    ids: torch.Tensor


class TextTrajectoryVLA:
    """A Qwen2-VL-family VLM and its :class:`TextTrajectoryProcessor`: plan = greedy decoding + parse.

    Args:
        model: an ``AutoModelForImageTextToText`` of the Qwen2-VL family (adapters merged).
        processor: the :class:`TextTrajectoryProcessor`.
    """

    def __init__(self, model, processor: TextTrajectoryProcessor):
        self.model, self.processor = model, processor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int | None = None, min_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy decoding with the KV cache after the batch's prompts: (B, T) new ids (T <= max_new_tokens;
        ``min_new_tokens`` forbids eos before that many tokens, as a benchmark forcing a length does)."""
        batch = {k: v.to(self.device) for k, v in batch.items() if k != "labels"}
        tok = self.processor.tokenizer
        kw = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
        out = self.model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens or self.processor.settings.max_new_tokens,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, use_cache=True, **kw)
        return out[:, batch["input_ids"].shape[1]:]

    def plan(self, inputs: list[PlanningInputs]) -> TextPlan:
        """Decode and parse one batch of PlanningInputs (only inputs are read)."""
        ids = self.generate(self.processor(list(inputs)))
        texts = self.processor.decode(ids)
        plans = [parse_trajectory(t) for t in texts]
        way = np.stack([p if p is not None else np.full((FUTURE_STEPS, 3), np.nan, np.float32) for p in plans])
        return TextPlan(way, np.array([p is not None for p in plans]), texts, ids)

    def save_pretrained(self, directory: str | Path) -> None:
        """The VLM (``save_pretrained``) and the processor into ``directory``."""
        self.model.save_pretrained(str(directory))
        self.processor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "TextTrajectoryVLA":
        """Load a checkpoint folder written by :meth:`save_pretrained` (offline), in eval mode.

        Raises:
            FileNotFoundError: a file is missing (naming it).
            ValueError: the VLM is not of the Qwen2-VL family.
        """
        from transformers import AutoModelForImageTextToText

        from dsdrive.student.vision_backbone import check_vision_backbone

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory / 'config.json'}: missing (not a text-trajectory VLA checkpoint)")
        processor = TextTrajectoryProcessor.from_pretrained(directory)
        model = AutoModelForImageTextToText.from_pretrained(str(directory), local_files_only=True).to(device).eval()
        check_vision_backbone(model)
        return cls(model, processor)


__all__ = ["TRAJECTORY_TEMPLATE_VERSION", "SETTINGS_FILE", "f2", "split_digits", "format_trajectory", "parse_trajectory", "TextTrajectorySettings",
           "TextTrajectoryProcessor", "TextPlan", "TextTrajectoryVLA"]
