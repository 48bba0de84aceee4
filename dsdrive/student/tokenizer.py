"""Byte-level BPE tokenizer for the embedded tiny student backbone, trained on prompt + reasoning text.

Trained with Hugging Face ``tokenizers`` (byte-level BPE as in GPT-2 / Qwen2, so any UTF-8 text
round-trips) and wrapped as a ``transformers.PreTrainedTokenizerFast``; it saves and loads with
``save_pretrained`` / ``AutoTokenizer.from_pretrained`` offline. A real backbone
(Qwen2.5-0.5B-Instruct, Llama-3.2-1B) brings its own tokenizer instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from dsdrive.annotation.reasoning import render_reasoning, render_student_prompt

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = [PAD, BOS, EOS]


def student_corpus(samples) -> list[str]:
    """Prompt (:func:`dsdrive.annotation.reasoning.render_student_prompt`, inputs only) and reasoning
    (:func:`dsdrive.annotation.reasoning.render_reasoning`, for annotated samples) texts of PlanningSamples."""
    texts = []
    for s in samples:
        texts.append(render_student_prompt(s.inputs))
        if s.annotation:
            texts.append(render_reasoning(s.annotation))
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it (pad/bos/eos = ``<|pad|>``/``<|bos|>``/``<|eos|>``, ids 0/1/2).

    The vocabulary holds the 256 byte symbols plus merges, so it is never smaller than
    256 + 3 whatever ``vocab_size`` says; no bos/eos is added automatically (the processor
    appends eos to reasoning text itself).

    Raises:
        ValueError: ``texts`` is empty.
    """
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_tokenizer: empty corpus")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, model_max_length=4096)


def build_tokenizer(samples, out_dir: str | Path | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train on :func:`student_corpus` of ``samples`` and save to ``out_dir`` when given."""
    tokenizer = train_tokenizer(student_corpus(samples), vocab_size=vocab_size)
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
