"""A text LLM annotator (GPT-Driver style): a local causal LM reads the scene as text and writes the
student's four-line reasoning, recording the top-k log-probs of what it writes.

``dsdrive annotate --annotator hf-llm --model PATH [--logprobs K] [--temperature T]``. GPT-Driver
(Mao et al., arXiv 2310.01415) casts planning as language modelling over a text description of
the scene; here any ``AutoModelForCausalLM`` folder (Qwen2.5-0.5B-Instruct, or a tiny Qwen2 saved
with the student's tokenizer) reads the scene text of ``prompts/teacher/gpt_driver_text_v1.jinja``
(ego status, history, command, nearest agents: the variables of
:func:`dsdrive.annotation.annotators.vlm_common.prompt_variables`, no image, no future unless
``hindsight``) and answers with the lines of ``prompts/reasoning/v1.jinja``::

    Scene: ...
    Key objects: vehicle at (16.1, 5.0), slower, ahead; ...   (or "none")
    Plan: MOVE FORWARD with DECELERATION.
    Why: ...

``--prompt gpt_driver_text_compact_v1`` shows the same facts (8 nearest agents) in about a third of
the tokens and no answer instructions, for a small LM fine-tuned on the reasoning
(:mod:`dsdrive.training.text_teacher`); the lines may come in any order (``reasoning/v2`` puts
``Plan:`` first), each is found by its header.

The meta-action is parsed from the ``Plan:`` line only
(:func:`dsdrive.annotation.meta_action_text.parse_stated_meta_action`); key objects
written as ``category at (x, y), reason`` are matched to the listed agent within
:data:`MATCH_RADIUS_M` of that point (ego frame, metres). An answer without the four lines or with an
unreadable plan is an :class:`AnnotationFailure` holding the raw text (no re-ask: a re-asked
answer would be conditioned on a conversation the student never sees). The annotation carries no
per-agent risk (train the RiskHead on another annotator's risks, or ``--risk_l1_weight 0``).

Because the model shares the student's tokenizer, the student can learn these very tokens:
with ``logprobs`` = k > 0 every successful answer keeps its :class:`TokenLogprobs` (generated ids,
top-k ids and log-probs per position), written beside the annotations by the runner
(:mod:`dsdrive.annotation.logprobs`). The log-probs are those of the distribution each token was
chosen from, read after every logits processor of the generation: the model's own softmax
(temperature 1) when decoding greedily (``temperature`` 0, the default), softmax(logits / T) when
sampling at ``temperature`` T. Top-k / top-p / repetition-penalty processors are switched off so
that this distribution is the model's (tempered) one. Chat models format the prompt with their
chat template; a tokenizer without one gets ``system + "\\n\\n" + user + "\\n\\n"``.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from dsdrive.annotation.annotators.base import Annotator
from dsdrive.annotation.annotators.vlm_answer import AnswerError
from dsdrive.annotation.annotators.vlm_common import TeacherPrompt, prompt_variables
from dsdrive.annotation.logprobs import LogprobRecorder, LogprobsHeader, TokenLogprobs, tokenizer_fingerprint
from dsdrive.annotation.schema import Annotation, AnnotationFailure, KeyObject
from dsdrive.data.paths import PROMPTS_DIR
from dsdrive.data.types import PlanningSample
from dsdrive.annotation.meta_action_text import parse_stated_meta_action

MATCH_RADIUS_M = 2.5
"""A key object written at (x, y) is the listed agent nearest to it within this distance (m)."""
_HEADER = re.compile(r"dsdrive-prompt:(?P<fields>[^#]*)")
_LINE = re.compile(r"^\s*(scene|key objects|plan|why)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_OBJECT = re.compile(r"^(?P<cat>[^;()]+?)\s+at\s+\(\s*(?P<x>-?\d+(?:\.\d+)?)\s*,\s*(?P<y>-?\d+(?:\.\d+)?)\s*\)\s*,?\s*(?P<why>.*)$")


def load_text_prompt(name: str, prompts_dir: str | Path | None = None) -> TeacherPrompt:
    """Load ``<prompts>/teacher/<name>.jinja`` whose header says ``schema=text``.

    Raises:
        FileNotFoundError: no such file (lists the text prompts available).
        ValueError: header missing, not ``schema=text``, or a block missing (names the file).
    """
    folder = Path(prompts_dir or PROMPTS_DIR) / "teacher"
    path = folder / f"{name}.jinja"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.jinja") if "schema=text" in p.read_text(encoding="utf-8").splitlines()[0])
        raise FileNotFoundError(f"prompt {name!r}: no file {path}; text prompts available: {have}")
    text = path.read_text(encoding="utf-8")
    m = _HEADER.search(text.splitlines()[0] if text else "")
    fields = dict(kv.split("=", 1) for kv in m.group("fields").split() if "=" in kv) if m else {}
    if fields.get("schema") != "text" or "version" not in fields:
        raise ValueError(f"{path}: first line must be '{{#- dsdrive-prompt: version=N schema=text hindsight=... -#}}', got fields {fields}")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    template = env.from_string(text)
    missing = {"system", "user"} - set(template.blocks)
    if missing:
        raise ValueError(f"{path}: missing jinja blocks {sorted(missing)}")
    return TeacherPrompt(name, fields["version"], "text", fields.get("hindsight", "false") == "true", template)


def parse_text_answer(text: str, sample: PlanningSample, agents: list[dict], *, teacher: str, prompt_version: str,
                      hindsight: bool) -> Annotation:
    """The four-line answer -> :class:`Annotation`.

    Args:
        text: the generated text.
        sample: the annotated sample; agents: the ``agents`` prompt variables (ego-frame ``x``, ``y``,
            ``agent_id``) the model was shown.

    Raises:
        AnswerError: a line is missing or empty, or the ``Plan:`` line states no meta-action of the
            vocabulary (the message names the line).
    """
    lines: dict[str, str] = {}
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m and m.group(1).lower() not in lines:
            lines[m.group(1).lower()] = m.group(2)
    missing = [k for k in ("scene", "key objects", "plan", "why") if not lines.get(k)]
    if missing:
        raise AnswerError(f"the answer lacks the line(s) {', '.join(k.capitalize() + ':' for k in missing)}")
    meta = parse_stated_meta_action(f"Plan: {lines['plan']}")
    if meta is None:
        raise AnswerError(f"'Plan: {lines['plan']}' is not 'BEHAVIOUR with SPEED' (or 'STOP') of the vocabulary")
    objects = []
    body = lines["key objects"].rstrip(".")
    for seg in ([] if body.strip().lower() == "none" else body.split(";")):
        m = _OBJECT.match(seg.strip())
        if not m:
            continue
        x, y = float(m.group("x")), float(m.group("y"))
        near = min(agents, key=lambda a: np.hypot(a["x"] - x, a["y"] - y), default=None)
        agent_id = near["agent_id"] if near is not None and np.hypot(near["x"] - x, near["y"] - y) <= MATCH_RADIUS_M else None
        objects.append(KeyObject(agent_id=agent_id, category=m.group("cat").strip(), position=(x, y), reason=m.group("why").strip()))
    return Annotation(sample_id=sample.sample_id, teacher=teacher, prompt_version=prompt_version, hindsight=hindsight,
                      scene_summary=lines["scene"], key_objects=objects, meta_action=meta, explanation=lines["why"])


def render_text_prompt(prompt: TeacherPrompt, tokenizer, sample: PlanningSample, hindsight: bool = False) -> tuple[str, list[dict]]:
    """The model's input text for ``sample`` and the agents listed in it.

    Args:
        prompt: a ``schema=text`` prompt (:func:`load_text_prompt`); tokenizer: the model's tokenizer
            (its chat template is used when it has one, else ``system + "\\n\\n" + user + "\\n\\n"``).
        sample: the sample (ego frame, metres); hindsight: also show the ground-truth future.

    Returns:
        (text, ``agents`` of :func:`~dsdrive.annotation.annotators.vlm_common.prompt_variables`: ``id``
        alias, ``agent_id``, ego-frame ``x``, ``y`` ...).
    """
    variables = prompt_variables(sample, [], hindsight)
    system, user = prompt.render("system", **variables), prompt.render("user", **variables)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                             tokenize=False, add_generation_prompt=True)
    else:
        text = f"{system}\n\n{user}\n\n"
    return text, variables["agents"]


class _TopKRecorder(LogitsProcessor):
    """Keeps, per generation step, the top-k (ids, log-probs) of log_softmax(scores / temperature) and
    the log-prob of the token chosen at the previous step; returns the scores unchanged.

    transformers runs custom processors after its own processors and before the sampling warpers
    (temperature, top-k, top-p), so the temperature is applied here; the other warpers are off."""

    def __init__(self, k: int, temperature: float = 1.0):
        self.k, self.temperature = k, temperature
        self.ids: list[torch.Tensor] = []
        self.lps: list[torch.Tensor] = []
        self.chosen: list[torch.Tensor] = []
        self._prev: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        lp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        if self._prev is not None:
            self.chosen.append(self._prev.gather(-1, input_ids[:, -1:]).squeeze(-1).cpu())
        v, i = lp.topk(min(self.k, lp.shape[-1]), dim=-1)
        self.ids.append(i.cpu())
        self.lps.append(v.cpu())
        self._prev = lp
        return scores

    def finish(self, last_tokens: torch.Tensor) -> None:
        """Log-prob of the last step's chosen tokens (B,)."""
        if self._prev is not None:
            self.chosen.append(self._prev.gather(-1, last_tokens[:, None].to(self._prev.device)).squeeze(-1).cpu())
            self._prev = None


class HFLLMAnnotator(LogprobRecorder, Annotator):
    """Text LLM annotator (see the module docstring).

    Args:
        model: local folder (or cached hub id) of a causal LM and its tokenizer.
        prompt: text prompt stem in ``prompts/teacher/`` (header ``schema=text``).
        batch_size: samples per ``generate`` call (left padding).
        max_new_tokens: generation budget per answer.
        logprobs: k, the top-k log-probs kept per generated token (0 = none).
        temperature: 0 = greedy; > 0 samples at that temperature (seeded by ``seed``).
        hindsight: show the ground-truth future (needs a prompt with ``hindsight=true``).
        device: ``cpu``, ``cuda``, ...; default CUDA when available.
        seed: torch seed set before each sampled batch.

    ``teacher_id`` is ``hf-llm:<model>``; ``usage`` counts prompt tokens, generated tokens (up to
    and including the end token) and ``generate`` calls.

    Raises:
        ValueError: ``batch_size`` / ``max_new_tokens`` < 1, ``logprobs`` < 0, ``temperature`` < 0,
            the tokenizer has neither eos nor pad token, or the prompt's hindsight differs from ``hindsight``.
        FileNotFoundError / OSError: the prompt or the model folder is missing.
    """

    def __init__(self, model: str, prompt: str = "gpt_driver_text_v1", batch_size: int = 8, max_new_tokens: int = 160,
                 logprobs: int = 0, temperature: float = 0.0, hindsight: bool = False, device: str | None = None, seed: int = 0):
        Annotator.__init__(self)
        if batch_size < 1 or max_new_tokens < 1 or logprobs < 0 or temperature < 0:
            raise ValueError(f"HFLLMAnnotator: batch_size={batch_size} and max_new_tokens={max_new_tokens} must be >= 1, "
                             f"logprobs={logprobs} and temperature={temperature} >= 0")
        self.prompt = load_text_prompt(prompt)
        if self.prompt.hindsight != hindsight:
            raise ValueError(f"prompt {prompt!r} has hindsight={self.prompt.hindsight} but the annotator was given hindsight={hindsight}")
        self.hindsight, self.batch_size, self.max_new_tokens = hindsight, batch_size, max_new_tokens
        self.temperature, self.seed, self.top_k = float(temperature), seed, int(logprobs)
        self.teacher_id, self.prompt_version = f"hf-llm:{model}", self.prompt.prompt_version
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        tok = self.tokenizer
        if tok.eos_token_id is None and tok.pad_token_id is None:
            raise ValueError(f"HFLLMAnnotator: tokenizer of {model} has neither eos nor pad token")
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self._eos_ids = sorted(set(eos) | ({tok.eos_token_id} if tok.eos_token_id is not None else set()))
        header = None
        if self.top_k:
            header = LogprobsHeader(self.teacher_id, str(model), tokenizer_fingerprint(tok), self.top_k,
                                    self.temperature if self.temperature > 0 else 1.0, self.prompt_version)
        self._init_recorder(header)

    def prompt_text(self, sample: PlanningSample) -> tuple[str, list[dict]]:
        """:func:`render_text_prompt` with this annotator's prompt, tokenizer and hindsight."""
        return render_text_prompt(self.prompt, self.tokenizer, sample, self.hindsight)

    @torch.inference_mode()
    def _generate(self, texts: list[str]) -> tuple[list[list[int]], _TopKRecorder]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = self.temperature > 0
        recorder = _TopKRecorder(max(self.top_k, 1), self.temperature if sample else 1.0)
        if sample:
            torch.manual_seed(self.seed)
        warpers = dict(temperature=self.temperature, top_k=0, top_p=1.0, typical_p=1.0) if sample else {}  # no truncation
        out = self.model.generate(
            **enc, max_new_tokens=self.max_new_tokens, do_sample=sample, repetition_penalty=1.0, no_repeat_ngram_size=0,
            num_beams=1, pad_token_id=self._pad_id, eos_token_id=self._eos_ids, logits_processor=LogitsProcessorList([recorder]),
            **warpers,
        )
        new = out[:, enc["input_ids"].shape[1]:]
        recorder.finish(new[:, -1])
        self.usage.requests += 1
        self.usage.tokens_in += int(enc["attention_mask"].sum())
        rows = []
        for row in new.tolist():
            n = next((k + 1 for k, t in enumerate(row) if t in self._eos_ids), len(row))
            rows.append(row[:n])
            self.usage.tokens_out += n
        return rows, recorder

    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """One result per sample, in order; with ``logprobs`` > 0 each annotated sample's
        :class:`TokenLogprobs` is kept for :meth:`pop_token_logprobs`."""
        results: list[Annotation | AnnotationFailure] = []
        for b in range(0, len(samples), self.batch_size):
            batch = samples[b:b + self.batch_size]
            prompts = [self.prompt_text(s) for s in batch]
            rows, rec = self._generate([p for p, _ in prompts])
            ids, lps = torch.stack(rec.ids, 1), torch.stack(rec.lps, 1)  # (B, T, k)
            chosen = torch.stack(rec.chosen, 1)  # (B, T)
            for j, (s, (_, agents), row) in enumerate(zip(batch, prompts, rows)):
                text = self.tokenizer.decode(row, skip_special_tokens=True)
                try:
                    ann = parse_text_answer(text.strip(), s, agents, teacher=self.teacher_id, prompt_version=self.prompt_version,
                                            hindsight=self.hindsight)
                except AnswerError as e:
                    results.append(AnnotationFailure(sample_id=s.sample_id, teacher=self.teacher_id, prompt_version=self.prompt_version,
                                                     reason=f"invalid answer: {e}", raw_text=text.strip()))
                    continue
                results.append(ann)
                if self.records_logprobs:
                    n = len(row)
                    self._keep_logprobs(s.sample_id, TokenLogprobs(row, chosen[j, :n].numpy(), ids[j, :n, :self.top_k].numpy(),
                                                                   lps[j, :n, :self.top_k].numpy(), text))
        return results

    def close(self) -> None:
        """Free the model."""
        self.model = None
