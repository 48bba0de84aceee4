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
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from dsdrive.annotation.annotators.vlm_common import ImageSource, Message, VLMAnnotator
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


class OpenAIAnnotator(VLMAnnotator):
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

    ``usage`` sums the endpoint's reported ``prompt_tokens`` / ``completion_tokens`` and counts
    HTTP requests that returned an answer.

    Raises:
        RuntimeError: no API key in the environment and no ``base_url``.
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
    ) -> None:
        super().__init__(f"openai:{model}", prompt=prompt, hindsight=hindsight)
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
                    resp = self._client.chat.completions.create(
                        model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=0.0
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
        return resp.choices[0].message.content

    def _chat(self, conversations: list[list[Message]]) -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, conversations))

    def annotate(self, samples: list[PlanningSample]) -> list[Annotation | AnnotationFailure]:
        """Annotate ``samples`` with ``concurrency`` worker threads, one sample each at a time
        (prompt, request, parse, one re-ask); one result per sample, in order."""
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-annotator") as pool:
            return list(pool.map(lambda s: self._annotate_one(s, self._one), samples))

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
