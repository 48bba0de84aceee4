"""The student's backbone causal LM: the embedded tiny Qwen2, and loading any causal LM from a path.

The default (offline) backbone is a tiny Qwen2 built from a config (no weights are downloaded)
over the byte-level BPE of :mod:`dsdrive.student.tokenizer`. On a real machine any causal LM that
``AutoModelForCausalLM`` loads from a local folder works (Qwen2.5-0.5B-Instruct, Llama-3.2-1B),
optionally in 4-bit / 8-bit through bitsandbytes (QLoRA, Dettmers et al. 2023).
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, BitsAndBytesConfig, PreTrainedModel, Qwen2Config


def resolve_backbone_path(value: str) -> Path:
    """A local folder for ``backbone_path``: the folder itself, or a cached Hugging Face snapshot.

    Args:
        value: a local folder with ``config.json`` or a repo id such as ``Qwen/Qwen2.5-0.5B-Instruct``
            whose snapshot is already in the local Hugging Face cache (offline: nothing is downloaded).

    Raises:
        ValueError: neither, naming the field and value.
    """
    p = Path(value).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"DistillConfig: backbone_path={value!r} is a folder without config.json (expected a saved causal LM)")
        return p
    if not p.exists() and value.count("/") == 1 and not value.startswith((".", "/", "~")):
        try:
            snap = Path(snapshot_download(value, local_files_only=True))
        except Exception:  # noqa: BLE001 - any miss (not cached, bad id) gets the same clear error
            snap = None
        if snap is not None and (snap / "config.json").is_file():
            return snap
        raise ValueError(f"DistillConfig: backbone_path={value!r} is neither a local folder nor a Hugging Face repo in the local "
                         f"cache (offline); run `huggingface-cli download {value}` or pass a local folder")
    raise ValueError(f"DistillConfig: backbone_path={value!r} does not exist (expected a local causal LM folder with config.json)")


def tiny_qwen2_config(vocab_size: int, hidden_size: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2, max_positions: int = 2048, **kw) -> Qwen2Config:
    """A tiny Qwen2 config (hidden 128, 2 layers, 4 heads, GQA 2 kv heads, untied head by default)."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=kw.pop("tie_word_embeddings", False),
        **kw,
    )


def build_tiny_backbone(tokenizer, out_dir: str | Path | None = None, seed: int = 0, **config_kw) -> PreTrainedModel:
    """Randomly initialised tiny Qwen2 sized to ``tokenizer`` (pad/bos/eos ids copied), saved to
    ``out_dir`` with its tokenizer when given (safetensors), so it loads with :func:`load_backbone`.
    """
    cfg = tiny_qwen2_config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config_kw,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model


def quantization_config(quantization: str | None):
    """BitsAndBytesConfig for ``"4bit"`` (NF4, double quantisation, bf16 compute) or ``"8bit"``; None -> None.

    Raises:
        ValueError: unknown value.
    """
    if quantization is None:
        return None
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization={quantization!r}: expected None, '4bit' or '8bit'")


def load_backbone(path: str | Path, quantization: str | None = None, dtype: torch.dtype | None = None, device_map=None) -> PreTrainedModel:
    """Load any causal LM from a local folder with ``AutoModelForCausalLM.from_pretrained``, or a
    vision-language model (a config with a ``vision_config``, e.g. Qwen2.5-VL) with
    ``AutoModelForImageTextToText.from_pretrained`` (the camera student's backbone).

    Args:
        path: folder with config.json + weights (no network is used: ``local_files_only``).
        quantization: None, ``"4bit"`` or ``"8bit"`` (bitsandbytes >= 0.48 also runs 4-bit on CPU,
            slowly; on CUDA the whole model is placed on the current device).
        dtype: weight dtype (default float32 without quantization).

    Raises:
        FileNotFoundError: ``path`` is not a folder with a config.json.
        ValueError: unknown ``quantization``.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"load_backbone: {path} has no config.json (expected a saved causal LM folder)")
    kw = {}
    if quantization is not None:
        kw["quantization_config"] = quantization_config(quantization)
        kw["device_map"] = device_map or {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
    elif device_map is not None:
        kw["device_map"] = device_map
    vision = getattr(AutoConfig.from_pretrained(str(path), local_files_only=True), "vision_config", None) is not None
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    return auto.from_pretrained(str(path), dtype=dtype or (torch.bfloat16 if quantization else torch.float32), local_files_only=True, **kw)
