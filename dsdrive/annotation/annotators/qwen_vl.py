"""Local Qwen2.5-VL teacher (DSDrive's teacher family; RSD uses Qwen2.5-VL for risk ranking).

Loads ``Qwen2_5_VLForConditionalGeneration`` + ``AutoProcessor`` from a local folder or hub id,
shows each sample's camera images (or its BEV rendering) with the text context of a versioned
prompt (:mod:`dsdrive.annotation.annotators.vlm_common`) and generates greedily in batches with left
padding. Each image is shown at a per-image pixel budget (``min_pixels`` / ``max_pixels``, rounded
by ``qwen_vl_utils.smart_resize`` to multiples of 28 x 28 = one vision token after the 2 x 2
merge): the default 200,704 pixels (256 vision tokens, e.g. 588 x 336 for a 16:9 frame) keeps six
cameras at ~1.5k vision tokens per sample.

Batching, so that a batch of 8 costs less than 8 batches of 1 (``eval/bench_vlm_batching.py``):

* conversations are sorted by prompt length (text tokens + vision tokens) before they are cut
  into batches, so batch-mates need little padding; answers come back in the caller's order;
* the inputs of the next batch (JPEG decoding at reduced DCT scale, resizing, the image
  processor, tokenisation) are prepared in a background thread while the model generates;
* the prefill uses :func:`varlen_sdpa_attention` (registered as ``dsdrive_varlen_sdpa``): with
  left padding, stock SDPA gets a 4-D mask and leaves the causal kernel (on CPU a batch with a
  single token of padding ran 2.4x slower per sample than an unpadded one); this function runs
  each group of equally padded rows through the causal kernel on its unpadded part instead.

Optional 4-bit / 8-bit weights via bitsandbytes ``BitsAndBytesConfig`` need a CUDA GPU; asked
for without one they raise a clear ``RuntimeError`` before anything is loaded.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import torch
from qwen_vl_utils import smart_resize
from transformers import AttentionInterface, AutoProcessor, BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from dsdrive.annotation.annotators.vlm_common import Message, VLMAnnotator

log = logging.getLogger(__name__)

VARLEN_ATTENTION = "dsdrive_varlen_sdpa"
"""Name under which :func:`varlen_sdpa_attention` is registered with transformers."""

DEFAULT_MIN_PIXELS = 28 * 28 * 16
"""16 vision tokens per image at least."""
DEFAULT_MAX_PIXELS = 28 * 28 * 256
"""256 vision tokens per image at most (six cameras ~ 1,536 tokens)."""


def varlen_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs):
    """SDPA attention that handles a left-padded prefill without a mask (transformers attention interface).

    For a prefill (query length = key length > 1) whose 4-D boolean mask is causal + left padding,
    rows with the same number ``p`` of pad tokens go through
    ``scaled_dot_product_attention(..., is_causal=True)`` on positions ``p:`` only; pad positions
    get zeros (they are masked as keys everywhere, so no real token ever reads them). Everything
    else (no mask, decoding steps, sliding windows, position biases, any other mask) goes to
    transformers' own ``sdpa_attention_forward``. Same results as stock SDPA at every real
    position, without the masked kernel (which cannot skip the causal upper triangle).

    Args:
        query: (B, H, T, D); key, value: (B, H_kv, T, D).
        attention_mask: (B, 1, T, T) boolean (True = attend) or None.

    Returns:
        (attention output (B, T, H, D), None).
    """
    b, h, t, _ = query.shape
    plain = (attention_mask is None or t == 1 or key.shape[2] != t or attention_mask.dtype != torch.bool
             or attention_mask.shape != (b, 1, t, t) or kwargs.get("sliding_window") or kwargs.get("position_bias") is not None
             or dropout)
    if not plain:
        last = attention_mask[:, 0, -1, :]  # what the last query sees: False on the left pads only
        pads = (~last).sum(-1)
        left_padded = torch.equal(last, torch.arange(t, device=last.device)[None] >= pads[:, None])
        plain = not left_padded or bool(attention_mask[:, 0, -2, -1].any())  # the mask must also be causal
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    out = query.new_zeros(b, h, t, value.shape[-1])
    for p in pads.unique().tolist():
        rows = (pads == p).nonzero().flatten()
        out[rows, :, p:] = torch.nn.functional.scaled_dot_product_attention(
            query[rows, :, p:], key[rows, :, p:], value[rows, :, p:], is_causal=True, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)  # the model builds the usual 4-D boolean mask for it


def _quantization_config(load_in_4bit: bool, load_in_8bit: bool, device: str):
    """BitsAndBytesConfig for 4/8-bit loading, or None; raises on CPU or when both are set."""
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        raise ValueError("QwenVLAnnotator: choose one of load_in_4bit and load_in_8bit, not both")
    if not device.startswith("cuda") or not torch.cuda.is_available():
        bits = 4 if load_in_4bit else 8
        raise RuntimeError(
            f"QwenVLAnnotator: load_in_{bits}bit needs a CUDA GPU (bitsandbytes quantized kernels); "
            f"device is {device!r} and torch.cuda.is_available() is {torch.cuda.is_available()}. "
            "Drop the flag to run in full precision on CPU."
        )
    if load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True
        )
    return BitsAndBytesConfig(load_in_8bit=True)


class QwenVLAnnotator(VLMAnnotator):
    """Qwen2.5-VL teacher filling :class:`dsdrive.annotation.schema.Annotation`.

    Args:
        model: local folder or hub id of a Qwen2.5-VL checkpoint (model + processor).
        batch_size: samples per ``generate`` call (left padding).
        prompt: prompt file stem in ``prompts/teacher/`` (``dsdrive_cot_v1``, ``risk_v1`` ...).
        max_pixels, min_pixels: per-image pixel budget (see the module docstring).
        load_in_4bit, load_in_8bit: bitsandbytes quantized weights (CUDA only).
        hindsight: show the ground-truth future (``dsdrive_cot_hindsight_v1`` by default).
        device: ``cuda``, ``cuda:1``, ``cpu``; default CUDA when available.
        max_new_tokens: generation budget per answer.
        attn_implementation: attention of the language model: ``dsdrive_varlen_sdpa`` (default,
            see the module docstring), ``sdpa``, ``eager`` or ``flash_attention_2``; the vision
            tower keeps transformers' default.
        sort_by_length: sort conversations by prompt length before batching (default True).
        prefetch: prepare the next batch's inputs in a background thread (default True).

    ``teacher_id`` is ``qwen-vl:<model>``; ``usage`` counts prompt tokens (vision tokens
    included, padding excluded), generated tokens (up to and including the end token) and
    ``generate`` calls.

    Raises:
        RuntimeError: 4/8-bit asked for without CUDA.
        FileNotFoundError: unknown prompt file.
        ValueError: ``batch_size`` or ``max_new_tokens`` < 1, or the pixel budget is not
            ``0 < min_pixels <= max_pixels``.
    """

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        prompt: str = "dsdrive_cot_v1",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        hindsight: bool = False,
        device: str | None = None,
        max_new_tokens: int = 512,
        attn_implementation: str = VARLEN_ATTENTION,
        sort_by_length: bool = True,
        prefetch: bool = True,
    ) -> None:
        super().__init__(f"qwen-vl:{model}", prompt=prompt, hindsight=hindsight)
        if batch_size < 1 or max_new_tokens < 1 or not (0 < min_pixels <= max_pixels):
            raise ValueError(
                f"QwenVLAnnotator: batch_size={batch_size} and max_new_tokens={max_new_tokens} must be >= 1 "
                f"and 0 < min_pixels={min_pixels} <= max_pixels={max_pixels}"
            )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        quant = _quantization_config(load_in_4bit, load_in_8bit, self.device)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.sort_by_length, self.prefetch = sort_by_length, prefetch
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.processor = AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"
        # images arrive already resized to the budget (ImageSource.load at _seen_size); make the
        # image processor keep them as they are (its own saved budget could shrink them again)
        size = self.processor.image_processor.size
        if isinstance(size, dict):
            size.update(shortest_edge=min_pixels, longest_edge=max_pixels)
        else:  # transformers >= 5: a SizeDict
            size.shortest_edge, size.longest_edge = min_pixels, max_pixels
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        kwargs = dict(dtype=dtype)
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map={"": self.device})
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model, **kwargs).eval()
        if quant is None:
            self.model.to(self.device)
        self.model.set_attn_implementation({"text_config": attn_implementation})
        tok = self.processor.tokenizer
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])

    def _seen_size(self, width: int, height: int) -> tuple[int, int]:
        h, w = smart_resize(height, width, factor=28, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return w, h

    def _qwen_messages(self, conv: list[Message]) -> tuple[list[dict], list]:
        """Messages for the chat template, and the conversation's images decoded at the size seen."""
        out, images = [], []
        for m in conv:
            if isinstance(m["content"], str):
                out.append({"role": m["role"], "content": [{"type": "text", "text": m["content"]}]})
                continue
            items = []
            for it in m["content"]:
                if it["type"] == "image":
                    items.append({"type": "image"})
                    images.append(it["source"].load(it["size"]))
                else:
                    items.append({"type": "text", "text": it["text"]})
            out.append({"role": m["role"], "content": items})
        return out, images

    def _prompt_length(self, conv: list[Message]) -> int:
        """Prompt tokens of a conversation: text tokens + vision tokens (one per 28 x 28 pixels)."""
        msgs = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                 else [{"type": "image"} if it["type"] == "image" else it for it in m["content"]]} for m in conv]
        text = self.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        vision = sum(it["size"][0] * it["size"][1] // (28 * 28) - 1 for m in conv if not isinstance(m["content"], str)
                     for it in m["content"] if it["type"] == "image")
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]) + vision

    def _prepare(self, convs: list[list[Message]]) -> tuple[object | None, dict[int, Exception]]:
        """Model inputs of one batch (decoded, resized images; left-padded token ids) on the device,
        for the conversations whose images decode, and ``{position in convs: OSError}`` for the others
        (None instead of inputs when none decodes)."""
        texts, images, failed = [], [], {}
        for k, c in enumerate(convs):
            try:
                msgs, ims = self._qwen_messages(c)
            except OSError as exc:
                failed[k] = exc
                continue
            texts.append(self.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
            images.extend(ims)
        if not texts:
            return None, failed
        return self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device), failed

    @torch.inference_mode()
    def _run(self, inputs) -> list[str]:
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self._pad_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        self.usage.requests += 1
        self.usage.tokens_in += int(inputs["attention_mask"].sum())
        for row in new.tolist():
            n = len(row)
            for k, t in enumerate(row):
                if t in self._eos_ids:
                    n = k + 1
                    break
            self.usage.tokens_out += n
        return self.processor.batch_decode(new, skip_special_tokens=True)

    def _generate(self, convs: list[list[Message]]) -> list[str]:
        """Answer one batch (one ``generate`` call), in order; raises the first image that does not decode."""
        inputs, failed = self._prepare(convs)
        if failed:
            raise next(iter(failed.values()))
        return self._run(inputs)

    def _batches(self, conversations: list[list[Message]]) -> list[list[int]]:
        """Indices of each batch: by ascending prompt length when ``sort_by_length`` (and batches hold
        more than one conversation), else in order."""
        order = list(range(len(conversations)))
        if self.sort_by_length and self.batch_size > 1:  # a batch of one has no padding to save
            lengths = [self._prompt_length(c) for c in conversations]
            order.sort(key=lambda i: lengths[i])
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def _chat(self, conversations: list[list[Message]]) -> list[str | Exception]:
        """Answer conversations in batches of ``batch_size``, in the caller's order. A conversation
        whose image does not decode fails alone (its ``OSError``); a batch that runs out of
        accelerator memory fails its samples, not the run."""
        answers: list[str | Exception | None] = [None] * len(conversations)
        batches = self._batches(conversations)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-vl-prefetch") if self.prefetch else None

        def prepare(k: int):
            convs = [conversations[i] for i in batches[k]]
            return pool.submit(self._prepare, convs) if pool else convs

        try:
            pending = prepare(0) if batches else None
            for k, idx in enumerate(batches):
                current = pending
                pending = prepare(k + 1) if k + 1 < len(batches) else None  # prepared while this batch generates
                inputs, failed = current.result() if pool else self._prepare(current)
                try:
                    got = iter(self._run(inputs) if inputs is not None else [])
                except torch.cuda.OutOfMemoryError as exc:
                    log.warning("qwen-vl: batch of %d failed: %s", len(idx), exc)
                    got = iter([exc] * (len(idx) - len(failed)))
                for pos, i in enumerate(idx):
                    answers[i] = failed[pos] if pos in failed else next(got)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
        return answers  # type: ignore[return-value]

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
