"""Local Qwen2.5-VL teacher (DSDrive's teacher family; RSD uses Qwen2.5-VL for risk ranking).

Loads ``Qwen2_5_VLForConditionalGeneration`` + ``AutoProcessor`` from a local folder or hub id,
shows each sample's camera images (or its BEV rendering) with the text context of a versioned
prompt (:mod:`dsdrive.annotation.annotators.vlm_common`) and generates greedily in batches with left
padding. Images go through ``qwen_vl_utils.process_vision_info`` with a per-image pixel budget
(``min_pixels`` / ``max_pixels``, rounded to multiples of 28 x 28 = one vision token after the
2 x 2 merge): the default 200,704 pixels (256 vision tokens, e.g. 588 x 336 for a 16:9 frame)
keeps six cameras at ~1.5k vision tokens per sample.

Optional 4-bit / 8-bit weights via bitsandbytes ``BitsAndBytesConfig`` need a CUDA GPU; asked
for without one they raise a clear ``RuntimeError`` before anything is loaded.
"""

from __future__ import annotations

import logging

import torch
from qwen_vl_utils import process_vision_info, smart_resize
from transformers import AutoProcessor, BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration

from dsdrive.annotation.annotators.vlm_common import Message, VLMAnnotator

log = logging.getLogger(__name__)

DEFAULT_MIN_PIXELS = 28 * 28 * 16
"""16 vision tokens per image at least."""
DEFAULT_MAX_PIXELS = 28 * 28 * 256
"""256 vision tokens per image at most (six cameras ~ 1,536 tokens)."""


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

    ``teacher_id`` is ``qwen-vl:<model>``; ``usage`` counts prompt tokens (vision tokens
    included, padding excluded), generated tokens (up to and including the end token) and
    ``generate`` calls.

    Raises:
        RuntimeError: 4/8-bit asked for without CUDA.
        FileNotFoundError: unknown prompt file.
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
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.processor = AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"
        # images arrive already resized to the budget by process_vision_info; make the image
        # processor keep them as they are (its own saved budget could shrink them again)
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
        tok = self.processor.tokenizer
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])

    def _seen_size(self, width: int, height: int) -> tuple[int, int]:
        h, w = smart_resize(height, width, factor=28, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return w, h

    def _qwen_messages(self, conv: list[Message]) -> list[dict]:
        out = []
        for m in conv:
            if isinstance(m["content"], str):
                out.append({"role": m["role"], "content": [{"type": "text", "text": m["content"]}]})
                continue
            items = []
            for it in m["content"]:
                if it["type"] == "image":
                    items.append({"type": "image", "image": it["image"], "min_pixels": self.min_pixels, "max_pixels": self.max_pixels})
                else:
                    items.append({"type": "text", "text": it["text"]})
            out.append({"role": m["role"], "content": items})
        return out

    @torch.inference_mode()
    def _generate(self, convs: list[list[Message]]) -> list[str]:
        msgs = [self._qwen_messages(c) for c in convs]
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
        images, _ = process_vision_info(msgs)
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt").to(self.device)
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

    def _chat(self, conversations: list[list[Message]]) -> list[str | Exception]:
        answers: list[str | Exception] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start:start + self.batch_size]
            try:
                answers.extend(self._generate(chunk))
            except torch.cuda.OutOfMemoryError as exc:  # a failed batch fails its samples, not the run
                log.warning("qwen-vl: batch of %d failed: %s", len(chunk), exc)
                answers.extend([exc] * len(chunk))
        return answers

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
