"""Annotator behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, DashScope).

DSDrive's teacher was Qwen2.5-VL-max through an API and VLM-AD used GPT-4o; this teacher sends
each sample's images as base64 ``data:`` URLs plus the versioned prompt text
(:mod:`dsdrive.annotation.annotators.vlm_common`) to ``POST {base_url}/chat/completions``.

* Concurrency: ``concurrency`` worker threads each take one sample through the whole flow
  (render or read its images, ask, parse, re-ask if needed), so at most ``concurrency`` requests
  are in flight and preparing a sample overlaps with other samples' requests; results come back
  in input order. ``eval/bench_openai_concurrency.py`` measures it through ``dsdrive annotate``.
* Images: a camera JPEG/PNG shown at its own size is sent as the file's bytes (no decode and
  re-encode); other images (the BEV rendering, resized ones) are encoded as JPEG (PNG with alpha).
* Retries: tenacity, exponential backoff with jitter (``backoff_s`` x 2^k, capped at 30 s), up to
  ``max_retries`` retries on HTTP 429, 5xx, timeouts and connection errors; other 4xx errors
  fail the sample at once. The SDK's own retries are off so that the policy is this one.
* The API key is read from the environment only (``OPENAI_API_KEY``, else ``DSDRIVE_API_KEY``),
  never taken as an argument, and redacted from every failure record and log line this module
  writes; ``teacher_id`` is ``openai:<model>`` (no URL, no key).
* Token log-probs (``logprobs`` = k in 1..20, for token-level KD): each request asks for
  ``logprobs: true, top_logprobs: k``; the answer's tokens and top-k candidates are mapped to ids
  of ``tokenizer`` (the served model's tokenizer folder): by their bytes for a byte-level BPE
  tokenizer (:class:`dsdrive.annotation.logprobs.TokenIdMapper`), or taken as sent with
  ``logprobs_token_ids`` (vLLM's ``return_tokens_as_token_ids``: tokens come as ``token_id:N``).
  The ids must decode to the answer's text, else the sample fails with the reason (a token the
  tokenizer lacks fails the same way). The record kept is that of the answer the annotation was
  parsed from (the re-ask's when there was one). The log-probs are the server's: the model's own
  distribution (vLLM's default ``--logprobs-mode raw_logprobs``; requests are greedy,
  ``temperature`` 0), recorded as temperature 1.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from dsdrive.annotation.annotators.vlm_common import ImageSource, Message, VLMAnnotator
from dsdrive.annotation.logprobs import (
    MAX_OPENAI_TOP_LOGPROBS,
    LogprobRecorder,
    LogprobsHeader,
    TokenIdMapper,
    TokenLogprobs,
    tokenizer_fingerprint,
)
from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.data.types import PlanningSample

log = logging.getLogger(__name__)

API_KEY_ENV = ("OPENAI_API_KEY", "DSDRIVE_API_KEY")
"""Environment variables read for the API key, in order."""


def read_api_key(base_url: str | None) -> str:
    """The API key from :data:`API_KEY_ENV`.

    A local endpoint (``base_url`` given) may need no key: then the placeholder ``"EMPTY"`` is
    used (vLLM's convention).

    Raises:
        RuntimeError: no key in the environment and no ``base_url`` (the official API needs one).
    """
    for name in API_KEY_ENV:
        if os.environ.get(name):
            return os.environ[name]
    if base_url:
        return "EMPTY"
    raise RuntimeError(f"OpenAIAnnotator: set {' or '.join(API_KEY_ENV)} in the environment (the key is never read from arguments or files)")


def _retryable(exc: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are worth retrying; other errors are not."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def file_data_url(path: str | Path, fmt: str) -> str:
    """The bytes of an image file as a ``data:image/<fmt>;base64,...`` URL (``fmt``: JPEG or PNG)."""
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def source_data_url(source: ImageSource, size: tuple[int, int]) -> str:
    """The data URL of an image shown at ``size``: the file's own bytes when it is a JPEG or PNG
    file shown at its own size, else the decoded (and resized) image encoded by :func:`image_data_url`."""
    if source.path is not None and source.format in ("JPEG", "PNG") and tuple(size) == tuple(source.size):
        return file_data_url(source.path, source.format)
    return image_data_url(source.load(size))


def image_data_url(image) -> str:
    """A PIL image as a ``data:image/jpeg;base64,...`` URL (PNG for images with transparency)."""
    buf = io.BytesIO()
    fmt = "PNG" if image.mode in ("RGBA", "LA", "P") else "JPEG"
    if fmt == "JPEG":
        image.convert("RGB").save(buf, format=fmt, quality=90)
    else:
        image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class _Answer(str):
    """An answer's text carrying the :class:`TokenLogprobs` of its tokens (or None)."""

    token_logprobs: TokenLogprobs | None = None


class OpenAIAnnotator(LogprobRecorder, VLMAnnotator):
    """VLM annotator over an OpenAI-compatible chat-completions endpoint.

    Args:
        model: model name the endpoint serves (e.g. ``gpt-4o``, ``qwen-vl-max``).
        base_url: endpoint root ending in ``/v1``; None = the official OpenAI API.
        prompt: prompt file stem in ``prompts/teacher/``.
        concurrency: requests in flight at most.
        hindsight: show the ground-truth future (``dsdrive_cot_hindsight_v1`` by default).
        max_retries: retries per request on 429 / 5xx / timeouts.
        timeout: seconds per request.
        max_tokens: completion budget per answer.
        backoff_s: first backoff wait (seconds), doubled per retry, capped at 30 s.
        logprobs: k, the top-k token log-probs recorded per answer token (0 = none, at most 20).
        tokenizer: the served model's tokenizer folder (needed with ``logprobs``).
        logprobs_token_ids: ask vLLM for ``token_id:N`` token strings (``return_tokens_as_token_ids``).

    ``usage`` sums the endpoint's reported ``prompt_tokens`` / ``completion_tokens`` and counts
    HTTP requests that returned an answer.

    Raises:
        RuntimeError: no API key in the environment and no ``base_url``.
        ValueError: ``logprobs`` outside 0..20, or ``logprobs`` without ``tokenizer``.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        prompt: str = "dsdrive_cot_v1",
        concurrency: int = 4,
        hindsight: bool = False,
        max_retries: int = 5,
        timeout: float = 60,
        max_tokens: int = 1024,
        backoff_s: float = 1.0,
        logprobs: int = 0,
        tokenizer: str | None = None,
        logprobs_token_ids: bool = False,
    ) -> None:
        VLMAnnotator.__init__(self, f"openai:{model}", prompt=prompt, hindsight=hindsight)
        if not 0 <= logprobs <= MAX_OPENAI_TOP_LOGPROBS:
            raise ValueError(f"OpenAIAnnotator: logprobs={logprobs} must lie in 0..{MAX_OPENAI_TOP_LOGPROBS} (the API's top_logprobs cap)")
        if logprobs and not tokenizer:
            raise ValueError("OpenAIAnnotator: logprobs needs tokenizer= the served model's tokenizer folder (--tokenizer PATH)")
        header, self._mapper, self._tokenizer = None, None, None
        if logprobs:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer)
            self._mapper = TokenIdMapper(self._tokenizer, ids_from_server=logprobs_token_ids)
            header = LogprobsHeader(f"openai:{model}", str(tokenizer), tokenizer_fingerprint(self._tokenizer), int(logprobs), 1.0,
                                    self.prompt_version)
        self._init_recorder(header)
        self.top_logprobs, self.logprobs_token_ids = int(logprobs), bool(logprobs_token_ids)
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"OpenAIAnnotator: concurrency={concurrency} must be >= 1 and max_retries={max_retries} >= 0")
        key = read_api_key(base_url)
        self._secrets.append(key)
        self.model, self.concurrency, self.max_retries = model, concurrency, max_retries
        self.max_tokens, self.backoff_s = max_tokens, backoff_s
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self._lock = threading.Lock()

    @staticmethod
    def _api_messages(conv: list[Message]) -> list[dict]:
        out = []
        for m in conv:
            if isinstance(m["content"], str):
                out.append({"role": m["role"], "content": m["content"]})
                continue
            parts = []
            for it in m["content"]:
                if it["type"] == "image":
                    parts.append({"type": "image_url", "image_url": {"url": source_data_url(it["source"], it["size"])}})
                else:
                    parts.append({"type": "text", "text": it["text"]})
            out.append({"role": m["role"], "content": parts})
        return out

    def _log_retry(self, state) -> None:
        exc = state.outcome.exception()
        log.warning("openai: attempt %d failed (%s), retrying", state.attempt_number, self._redact(f"{type(exc).__name__}: {exc}"))

    def _one(self, conv: list[Message]) -> str | Exception:
        """One chat completion with the retry policy; the exception that stopped it otherwise."""
        try:
            messages = self._api_messages(conv)
        except OSError as exc:  # an image that does not decode: the sample fails, no request
            return exc
        try:
            for attempt in Retrying(
                retry=retry_if_exception(_retryable),
                stop=stop_after_attempt(self.max_retries + 1),
                wait=wait_random_exponential(multiplier=self.backoff_s, max=30),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    extra = {}
                    if self.top_logprobs:
                        extra = dict(logprobs=True, top_logprobs=self.top_logprobs)
                        if self.logprobs_token_ids:
                            extra["extra_body"] = {"return_tokens_as_token_ids": True}
                    resp = self._client.chat.completions.create(
                        model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=0.0, **extra
                    )
        except Exception as exc:  # recorded as the sample's failure (redacted there)
            return exc
        with self._lock:
            self.usage.requests += 1
            if resp.usage is not None:
                self.usage.tokens_in += int(resp.usage.prompt_tokens or 0)
                self.usage.tokens_out += int(resp.usage.completion_tokens or 0)
        if not resp.choices or resp.choices[0].message.content is None:
            return ValueError("the endpoint returned no message content")
        answer = _Answer(resp.choices[0].message.content)
        if self.top_logprobs:
            try:
                answer.token_logprobs = self._answer_logprobs(resp.choices[0], str(answer))
            except ValueError as exc:
                return exc
        return answer

    def _answer_logprobs(self, choice, content: str) -> TokenLogprobs:
        """The choice's ``logprobs.content`` as ids of the served model's tokenizer.

        Raises:
            ValueError: no log-probs in the answer, a token not in the tokenizer, or ids that do not
                decode to ``content``.
        """
        items = getattr(getattr(choice, "logprobs", None), "content", None)
        if not items:
            raise ValueError("logprobs: the endpoint returned no logprobs.content (does it support logprobs / top_logprobs?)")
        k = self.top_logprobs
        ids, chosen = np.zeros(len(items), np.int32), np.zeros(len(items), np.float32)
        top_ids, top_lp = np.zeros((len(items), k), np.int32), np.full((len(items), k), -np.inf, np.float32)
        for j, it in enumerate(items):
            ids[j], chosen[j] = self._mapper.id_of(it.token, it.bytes), it.logprob
            cands = sorted(it.top_logprobs or [], key=lambda c: -c.logprob)[:k]
            for c, cand in enumerate(cands):
                top_ids[j, c], top_lp[j, c] = self._mapper.id_of(cand.token, cand.bytes), cand.logprob
        decoded = self._tokenizer.decode(ids.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if decoded != content:
            raise ValueError(f"logprobs: the {len(ids)} token ids decode to {decoded[:80]!r}..., not to the answer {content[:80]!r}...; "
                             "is --tokenizer the served model's tokenizer?")
        return TokenLogprobs(ids, np.maximum(chosen, -1e4), top_ids, top_lp, content)

    def _chat(self, conversations: list[list[Message]]) -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, conversations))

    def _annotate_recorded(self, sample: PlanningSample) -> Annotation | AnnotationFailure:
        """One sample's flow; with ``logprobs`` the log-probs of the answer it was parsed from are kept."""
        answers: list = []

        def ask(conv):
            answers.append(self._one(conv))
            return answers[-1]

        result = self._annotate_one(sample, ask)
        if isinstance(result, Annotation) and self.records_logprobs and getattr(answers[-1], "token_logprobs", None) is not None:
            self._keep_logprobs(sample.sample_id, answers[-1].token_logprobs)
        return result

    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """Annotate ``samples`` with ``concurrency`` worker threads, one sample each at a time
        (prompt, request, parse, one re-ask); one result per sample, in order. With ``logprobs``
        each annotated sample's :class:`TokenLogprobs` is kept for :meth:`pop_token_logprobs`."""
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-annotator") as pool:
            return list(pool.map(self._annotate_recorded, samples))

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
