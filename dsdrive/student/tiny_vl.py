"""The embedded tiny Qwen2.5-VL: a vision-language backbone built from a config, so everything runs offline.

What :func:`build_tiny_qwen_vl` makes (random weights, nothing downloaded):

* a ``Qwen2_5_VLForConditionalGeneration`` (Qwen2.5-VL, Bai et al. 2025) with a 2-layer text model
  (hidden 64 by default, multimodal RoPE sections scaled to the head size) and a 2-block vision
  tower (hidden 32, patch 14, 2 x 2 patch merger: one LLM token per 28 x 28 pixels);
* a byte-level BPE tokenizer (Hugging Face ``tokenizers``) with Qwen's special tokens
  (``<|im_start|>``, ``<|vision_start|>``, ``<|image_pad|>`` ...) and a chat template with Qwen2-VL's
  structure, trained on a given corpus (the student's prompts and reasoning) or a small default;
* a ``Qwen2_5_VLProcessor`` whose ``Qwen2VLImageProcessor`` has the given pixel budget.

It stands in for Qwen2.5-VL-3B-Instruct (EvoDriveVLA's student size) in the camera student's
recipe and tests: the same classes, the same image processing, the same code paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
"""Qwen2-VL's special tokens (ids 0-6 of the tiny tokenizer)."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL chat template reduced to text + image items (the structure of Qwen's own template)."""

DEFAULT_CORPUS = [
    "You are a driving assistant. Answer in JSON with scene_summary, key_objects, meta_action.",
    '{"scene_summary": "a car ahead", "meta_action": {"behaviour": "MOVE FORWARD", "speed": "CONSTANT"}}',
    "ego speed 4.8 m/s, command STRAIGHT, history (-9.1, 0.2) (-6.8, 0.1) waypoints [(1.2, 0.0)]",
    "CAM_FRONT CAM_FRONT_LEFT CAM_FRONT_RIGHT CAM_BACK CAM_BACK_LEFT CAM_BACK_RIGHT pedestrian truck",
]
"""Texts the default tokenizer is trained on (each 4 times), when no corpus is given."""


def tiny_qwen_vl_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 400):
    """Byte-level BPE with :data:`SPECIAL_TOKENS` (eos ``<|im_end|>``, pad ``<|endoftext|>``) and
    :data:`CHAT_TEMPLATE`, trained on ``corpus`` (default :data:`DEFAULT_CORPUS` x 4).

    Raises:
        ValueError: ``corpus`` holds no text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in (DEFAULT_CORPUS * 4 if corpus is None else corpus) if t]
    if not texts:
        raise ValueError("tiny_qwen_vl_tokenizer: empty corpus")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left",
                                   chat_template=CHAT_TEMPLATE)


def mrope_sections(head_dim: int) -> list[int]:
    """Multimodal RoPE split (temporal, height, width) of ``head_dim / 2`` rotary frequencies in
    Qwen2.5-VL's 1/4, 3/8, 3/8 proportions ([16, 24, 24] for head_dim 128; [2, 3, 3] for 16)."""
    half = head_dim // 2
    hw = half * 3 // 8
    return [half - 2 * hw, hw, hw]


def tiny_qwen_vl_config(vocab_size: int, special_ids: dict[str, int] | None = None, hidden_size: int = 64, layers: int = 2,
                        heads: int = 4, kv_heads: int = 2, vision_hidden_size: int = 32, vision_depth: int = 2, vision_heads: int = 2,
                        max_positions: int = 4096):
    """A tiny ``Qwen2_5_VLConfig``; ``special_ids`` maps :data:`SPECIAL_TOKENS` to ids (default: the
    last 7 ids of the vocabulary).

    Raises:
        ValueError: ``hidden_size`` not divisible by ``heads``, or an id outside the vocabulary.
    """
    from transformers import Qwen2_5_VLConfig

    if hidden_size % heads:
        raise ValueError(f"tiny_qwen_vl_config: hidden_size={hidden_size} is not divisible by heads={heads}")
    ids = special_ids or {t: vocab_size - len(SPECIAL_TOKENS) + k for k, t in enumerate(SPECIAL_TOKENS)}
    bad = {t: i for t, i in ids.items() if not 0 <= i < vocab_size}
    if bad:
        raise ValueError(f"tiny_qwen_vl_config: special token ids {bad} outside the vocabulary of {vocab_size}")
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_sections(hidden_size // heads)},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
                           num_heads=vision_heads, out_hidden_size=hidden_size, fullatt_block_indexes=[vision_depth - 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def build_tiny_qwen_vl(out_dir: str | Path | None = None, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 16,
                       corpus: Iterable[str] | None = None, vocab_size: int = 400, seed: int = 0, **sizes):
    """Build (and save, with ``out_dir``) a tiny random Qwen2.5-VL with its processor.

    Args:
        out_dir: folder to write (created) so that ``AutoProcessor`` / ``AutoModelForImageTextToText``
            ``.from_pretrained`` read it back; None keeps everything in memory.
        min_pixels, max_pixels: the image processor's per-image pixel budget (28 x 28 = one vision
            token); the defaults give 4-16 vision tokens per image.
        corpus, vocab_size: tokenizer training texts and size (:func:`tiny_qwen_vl_tokenizer`).
        seed: ``torch.manual_seed`` before the weights are drawn.
        sizes: keyword arguments of :func:`tiny_qwen_vl_config` (hidden_size, layers, heads, ...).

    Returns:
        ``(model, processor)``: a ``Qwen2_5_VLForConditionalGeneration`` in eval mode and a
        ``Qwen2_5_VLProcessor``.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = tiny_qwen_vl_tokenizer(corpus, vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    torch.manual_seed(seed)
    config = tiny_qwen_vl_config(len(tokenizer), ids, **sizes)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels), chat_template=CHAT_TEMPLATE,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return model, processor


__all__ = ["SPECIAL_TOKENS", "CHAT_TEMPLATE", "tiny_qwen_vl_tokenizer", "tiny_qwen_vl_config", "mrope_sections", "build_tiny_qwen_vl"]
