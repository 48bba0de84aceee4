"""What the VLM annotators share: versioned prompts, the ask / re-ask loop, failure records.

A VLM annotator (local Qwen2.5-VL: :mod:`dsdrive.annotation.annotators.qwen_vl`; any OpenAI-compatible
endpoint: :mod:`dsdrive.annotation.annotators.openai_api`) shows a sample's camera images (or, for a sample
without cameras, a BEV rendering: :mod:`dsdrive.annotation.bev_render`) and a text context built from
:class:`dsdrive.data.types.PlanningInputs` (ego status, command, history, nearest agents; with
``hindsight`` also the ground-truth future, VLM-AD style) through a prompt file
``prompts/teacher/<name>.jinja``. The answer must be JSON (:mod:`dsdrive.annotation.annotators.vlm_answer`);
if it is not valid the annotator asks once more, quoting the validation error; if it is still
invalid the sample gets an :class:`AnnotationFailure` with the reason and the raw text.

Images travel in the conversation as :class:`ImageSource` references (file path + size read from
the header, or an in-memory BEV rendering), not as decoded pixels: each backend loads what it
needs where it needs it (the local VLM decodes at the size it sees, in its prefetch thread; the API
annotator sends the JPEG file's bytes as they are, in its request thread).

Prompt files: a header ``{#- dsdrive-prompt: version=1 schema=cot|risk hindsight=true|false -#}``
and three jinja2 blocks, ``system``, ``user`` and ``reask`` (the latter sees ``error``). The
stored ``prompt_version`` is ``teacher/<name>@v<version>``.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from PIL import Image

from dsdrive.annotation.bev_render import render_bev
from dsdrive.annotation.scene_context import agent_alias, nearest_agents
from dsdrive.annotation.schema import BEHAVIOURS, SPEEDS, Annotation, AnnotationFailure
from dsdrive.data.paths import PROMPTS_DIR
from dsdrive.annotation.annotators.base import Annotator
from dsdrive.annotation.annotators.vlm_answer import AnswerContext, AnswerError, parse_answer
from dsdrive.data.types import EGO_STATUS_FIELDS, HISTORY_STEPS, STEP_SECONDS, PlanningSample

_HEADER = re.compile(r"\{#-?\s*dsdrive-prompt:(?P<fields>[^#]*)-?#\}")

Message = dict[str, Any]
"""A chat message: ``{"role": ..., "content": str | list[item]}``; an item is
``{"type": "text", "text": str}`` or ``{"type": "image", "source": ImageSource, "size": (w, h), "camera": str}``
where ``size`` is the pixel size at which the model sees the image."""


@dataclass
class ImageSource:
    """One image of a conversation, not decoded yet.

    Attributes:
        camera: camera name (``CAM_FRONT`` ...) or ``BEV``.
        size: original (width, height) in pixels (from the file header, or of ``image``).
        path: the image file (camera images), or None.
        format: the file's format from its header (``JPEG``, ``PNG`` ...), or None.
        image: an in-memory image (the BEV rendering), or None.
    """

    camera: str
    size: tuple[int, int]
    path: Path | None = None
    format: str | None = None
    image: Image.Image | None = None

    @classmethod
    def from_file(cls, camera: str, path: str | Path) -> "ImageSource":
        """Read the header of ``path`` (size, format) without decoding the pixels.

        Raises:
            FileNotFoundError: no such file (the message names the camera and the path).
            PIL.UnidentifiedImageError: the file is not an image Pillow can read.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"camera {camera} image_path {path} does not exist")
        with Image.open(path) as im:
            return cls(camera, im.size, path, im.format)

    def load(self, size: tuple[int, int] | None = None) -> Image.Image:
        """The image as RGB, resized to ``size`` (width, height) when given.

        A JPEG file is decoded at a reduced DCT scale (``Image.draft``: 1/2, 1/4 or 1/8, never
        below ``size``) before the bicubic resize, which is several times faster than decoding the
        full frame and gives the same picture at the target size.

        Raises:
            OSError: the file cannot be decoded (truncated, corrupt); the message names the file.
        """
        size = tuple(size) if size is not None else self.size
        if self.image is not None:
            im = self.image.convert("RGB")
        else:
            try:
                with Image.open(self.path) as f:
                    f.draft("RGB", size)
                    im = f.convert("RGB")
            except OSError as exc:
                raise OSError(f"camera {self.camera}: cannot decode {self.path}: {exc}") from exc
        return im if im.size == size else im.resize(size, Image.Resampling.BICUBIC)


@dataclass
class TeacherPrompt:
    """A versioned prompt file of ``prompts/teacher/``.

    Attributes:
        name: file stem, e.g. ``dsdrive_cot_v1``.
        version: the header's ``version``.
        schema: answer schema, ``cot`` or ``risk`` (:data:`dsdrive.annotation.annotators.vlm_answer.SCHEMAS`).
        hindsight: the prompt shows the ground-truth future.
    """

    name: str
    version: str
    schema: str
    hindsight: bool
    template: jinja2.Template

    @property
    def prompt_version(self) -> str:
        return f"teacher/{self.name}@v{self.version}"

    def render(self, block: str, **variables: Any) -> str:
        """Render one block (``system``, ``user`` or ``reask``); undefined variables raise."""
        ctx = self.template.new_context(variables)
        return "".join(self.template.blocks[block](ctx)).strip()


def load_prompt(name: str, prompts_dir: str | Path | None = None) -> TeacherPrompt:
    """Load ``<prompts_dir>/teacher/<name>.jinja`` (default :data:`dsdrive.data.paths.PROMPTS_DIR`).

    Raises:
        FileNotFoundError: no such prompt file (the message lists the available ones).
        ValueError: the header is missing or malformed, or a block is missing (naming the file).
    """
    folder = Path(prompts_dir or PROMPTS_DIR) / "teacher"
    path = folder / f"{name}.jinja"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.jinja"))
        raise FileNotFoundError(f"prompt {name!r}: no file {path}; available: {have}")
    text = path.read_text(encoding="utf-8")
    m = _HEADER.search(text.splitlines()[0] if text else "")
    if not m:
        raise ValueError(f"{path}: first line must be '{{#- dsdrive-prompt: version=N schema=cot|risk hindsight=... -#}}'")
    fields = dict(kv.split("=", 1) for kv in m.group("fields").split() if "=" in kv)
    if fields.get("schema") not in ("cot", "risk") or "version" not in fields:
        raise ValueError(f"{path}: header fields {fields} need version=N and schema=cot|risk")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    template = env.from_string(text)
    missing = {"system", "user", "reask"} - set(template.blocks)
    if missing:
        raise ValueError(f"{path}: missing jinja blocks {sorted(missing)}")
    return TeacherPrompt(name, fields["version"], fields["schema"], fields.get("hindsight", "false") == "true", template)


def prompt_variables(sample: PlanningSample, images: list[tuple[str, int, int]], hindsight: bool) -> dict[str, Any]:
    """Template variables of one sample.

    The :data:`~dsdrive.annotation.scene_context.MAX_CONTEXT_AGENTS` nearest agents are listed as
    ``agents`` with ``id`` = their alias (:func:`~dsdrive.annotation.scene_context.agent_alias`) and
    ``agent_id`` = the real track id.

    Args:
        sample: the sample (ego frame: x forward, y left, metres).
        images: ``(camera, seen_w, seen_h)`` per image shown, in order (``BEV`` for a rendering).
        hindsight: add ``future`` (ground-truth ego waypoints) and each listed agent's
            ``future_xy`` at +3 s (VLM-AD hindsight); otherwise neither is present.
    """
    inp = sample.inputs
    status = [
        {"name": n, "value": round(float(v), 2)}
        for n, v, m in zip(EGO_STATUS_FIELDS, inp.ego_status, inp.ego_status_mask)
        if m
    ]
    history = [
        {"t": -STEP_SECONDS * (HISTORY_STEPS - i), "x": round(float(p[0]), 2), "y": round(float(p[1]), 2)}
        for i, (p, m) in enumerate(zip(inp.ego_history, inp.ego_history_mask))
        if m
    ]
    agents = []
    for rank, i in enumerate(nearest_agents(sample)):
        b, v = inp.agents.boxes[i], inp.agents.velocities[i]
        a = {
            "id": agent_alias(rank), "agent_id": inp.agents.ids[i], "type": inp.agents.types[i], "x": round(float(b[0]), 1),
            "y": round(float(b[1]), 1), "vx": round(float(v[0]), 1), "vy": round(float(v[1]), 1),
        }
        if hindsight:
            fut, mask = sample.targets.agent_futures, sample.targets.agent_future_masks
            ok = np.flatnonzero(mask[i][:6]) if len(mask) else []
            a["future_xy"] = (round(float(fut[i, ok[-1], 0]), 1), round(float(fut[i, ok[-1], 1]), 1)) if len(ok) else None
        agents.append(a)
    out = {
        "sample_id": sample.sample_id,
        "command": inp.command,
        "speed": round(inp.speed, 2),
        "ego_status": status,
        "history": history,
        "agents": agents,
        "images": [{"camera": c, "width": w, "height": h} for c, w, h in images],
        "bev": any(c == "BEV" for c, _, _ in images),
        "behaviours": list(BEHAVIOURS),
        "speeds": list(SPEEDS),
    }
    if hindsight:
        t = sample.targets
        out["future"] = [
            {"t": STEP_SECONDS * (i + 1), "x": round(float(p[0]), 2), "y": round(float(p[1]), 2)}
            for i, (p, m) in enumerate(zip(t.ego_future, t.ego_future_mask))
            if m
        ]
    return out


class VLMAnnotator(Annotator):
    """Base of the VLM annotators: builds conversations, parses, re-asks once, records failures.

    Subclasses implement :meth:`_chat` (answer a list of conversations) and :meth:`_seen_size`
    (the pixel size at which the model sees an image). Secrets registered in ``_secrets`` are
    redacted from every failure record.
    """

    def __init__(self, teacher_id: str, prompt: str = "dsdrive_cot_v1", hindsight: bool = False) -> None:
        super().__init__()
        if hindsight and prompt == "dsdrive_cot_v1":
            prompt = "dsdrive_cot_hindsight_v1"
        self.prompt = load_prompt(prompt)
        if self.prompt.hindsight != hindsight:
            raise ValueError(f"prompt {prompt!r} has hindsight={self.prompt.hindsight} but the annotator was given hindsight={hindsight}")
        self.hindsight = hindsight
        self.teacher_id = teacher_id
        self.prompt_version = self.prompt.prompt_version
        self._secrets: list[str] = []

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _chat(self, conversations: list[list[Message]]) -> list[str | Exception]:
        """Answer each conversation (text, or the exception that stopped it), in order."""

    def _seen_size(self, width: int, height: int) -> tuple[int, int]:
        """Pixel size at which the model sees a ``width`` x ``height`` image (default: as is)."""
        return width, height

    # ------------------------------------------------------------------ shared flow
    def _redact(self, text: str | None) -> str | None:
        if text is None:
            return None
        for s in self._secrets:
            if s:
                text = text.replace(s, "***")
        return text

    def _images(self, sample: PlanningSample) -> list[ImageSource]:
        """The sample's camera images (headers only), else its BEV rendering.

        Raises:
            FileNotFoundError: a camera image is missing (names the sample, camera and path).
        """
        if not sample.inputs.cameras:
            bev = render_bev(sample)
            return [ImageSource("BEV", bev.size, image=bev)]
        out = []
        for cam in sample.inputs.cameras:
            try:
                out.append(ImageSource.from_file(cam.name, cam.image_path))
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"sample {sample.sample_id}: {exc}") from exc
        return out

    def _conversation(self, sample: PlanningSample) -> tuple[list[Message], AnswerContext]:
        """The first-turn messages of ``sample`` and the context its answer is parsed with."""
        images = self._images(sample)
        seen = {src.camera: (*self._seen_size(*src.size), *src.size) for src in images}
        variables = prompt_variables(sample, [(c, s[0], s[1]) for c, s in seen.items()], self.hindsight)
        content: list[dict] = []
        for src in images:
            cam = src.camera
            content.append({"type": "text", "text": f"{cam} ({seen[cam][0]}x{seen[cam][1]}):"})
            content.append({"type": "image", "source": src, "size": seen[cam][:2], "camera": cam})
        content.append({"type": "text", "text": self.prompt.render("user", **variables)})
        messages = [
            {"role": "system", "content": self.prompt.render("system", **variables)},
            {"role": "user", "content": content},
        ]
        agent_pos = {a["id"]: (a["x"], a["y"]) for a in variables["agents"]}
        aliases = {a["id"]: a["agent_id"] for a in variables["agents"]}
        ctx = AnswerContext({c: s for c, s in seen.items() if c != "BEV"}, agent_pos, aliases)
        return messages, ctx

    def _parse(self, text: str, sample: PlanningSample, ctx: AnswerContext) -> Annotation:
        return parse_answer(
            text, self.prompt.schema, ctx, sample_id=sample.sample_id, teacher=self.teacher_id,
            prompt_version=self.prompt_version, hindsight=self.hindsight,
        )

    def _failure(self, sample: PlanningSample, reason: str, raw: str | None) -> AnnotationFailure:
        return AnnotationFailure(
            sample_id=sample.sample_id, teacher=self.teacher_id, prompt_version=self.prompt_version,
            reason=self._redact(reason), raw_text=self._redact(raw),
        )

    def _first_answer(self, sample: PlanningSample, conv: list[Message], ctx: AnswerContext,
                      raw: str | Exception) -> tuple[Annotation | AnnotationFailure, list[Message] | None]:
        """Result of the first answer, and the re-ask conversation when the answer was invalid."""
        if isinstance(raw, Exception):
            return self._failure(sample, f"request failed: {type(raw).__name__}: {raw}", None), None
        try:
            return self._parse(raw, sample, ctx), None
        except AnswerError as exc:
            follow_up = {"role": "user", "content": self.prompt.render("reask", error=str(exc))}
            reask = [*conv, {"role": "assistant", "content": raw}, follow_up]
            return self._failure(sample, f"invalid answer: {exc}", raw), reask

    def _second_answer(self, sample: PlanningSample, ctx: AnswerContext, first: AnnotationFailure,
                       raw: str | Exception) -> Annotation | AnnotationFailure:
        """Result of the re-ask answer (``first`` is the failure recorded for the first answer)."""
        if isinstance(raw, Exception):
            return self._failure(sample, f"re-ask request failed: {type(raw).__name__}: {raw}", first.raw_text)
        try:
            return self._parse(raw, sample, ctx)
        except AnswerError as exc:
            return self._failure(
                sample, f"invalid answer after one re-ask: {exc}",
                f"--- first answer ---\n{first.raw_text}\n--- re-ask answer ---\n{raw}",
            )

    def _annotate_one(self, sample: PlanningSample, ask) -> Annotation | AnnotationFailure:
        """The whole flow for one sample with ``ask(conversation) -> str | Exception`` (used by
        backends that serve samples independently, e.g. one request thread per sample)."""
        try:
            conv, ctx = self._conversation(sample)
        except (FileNotFoundError, OSError, jinja2.UndefinedError) as exc:
            return self._failure(sample, f"could not build the prompt: {exc}", None)
        result, reask = self._first_answer(sample, conv, ctx, ask(conv))
        return result if reask is None else self._second_answer(sample, ctx, result, ask(reask))

    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """Annotate ``samples``: ask, parse, re-ask once with the validation error, else fail.

        All first questions go to :meth:`_chat` in one call (the backend batches them), then all
        re-asks in a second call. Returns one :class:`Annotation` or :class:`AnnotationFailure`
        per sample, in order. A sample whose images are missing fails without a request (reason
        names the file).
        """
        results: list[Annotation | AnnotationFailure | None] = [None] * len(samples)
        convs: dict[int, tuple[list[Message], AnswerContext]] = {}
        for i, s in enumerate(samples):
            try:
                convs[i] = self._conversation(s)
            except (FileNotFoundError, OSError, jinja2.UndefinedError) as exc:
                results[i] = self._failure(s, f"could not build the prompt: {exc}", None)
        order = list(convs)
        first = self._chat([convs[i][0] for i in order])
        reask: dict[int, list[Message]] = {}
        for i, raw in zip(order, first):
            results[i], again = self._first_answer(samples[i], *convs[i], raw)
            if again is not None:
                reask[i] = again
        if reask:
            second = self._chat(list(reask.values()))
            for i, raw in zip(reask, second):
                results[i] = self._second_answer(samples[i], convs[i][1], results[i], raw)
        return results  # type: ignore[return-value]
