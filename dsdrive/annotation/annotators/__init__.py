"""Annotators that label planning samples (see :mod:`dsdrive.annotation.annotators.base`).

:func:`build_annotator` maps a ``dsdrive annotate --teacher NAME`` to an annotator instance. Annotator
modules are imported lazily, so the rule annotator never pulls in transformers or openai.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

ANNOTATORS = {
    "rule": ("dsdrive.annotation.annotators.rule", "RuleAnnotator"),
    "qwen-vl": ("dsdrive.annotation.annotators.qwen_vl", "QwenVLAnnotator"),
    "openai": ("dsdrive.annotation.annotators.openai_api", "OpenAIAnnotator"),
    "pdm-closed": ("dsdrive.annotation.annotators.pdm_closed", "PDMClosedAnnotator"),  # the PDM-Closed planner's plan
    "hf-llm": ("dsdrive.annotation.annotators.hf_llm", "HFLLMAnnotator"),
}
"""Annotator name -> (module, class)."""
OPTION_KEYS = (
    "model", "prompt", "batch_size", "concurrency", "base_url", "max_pixels", "min_pixels", "load_in_4bit",
    "load_in_8bit", "hindsight", "max_new_tokens", "max_tokens", "max_retries", "timeout",
    "logprobs", "tokenizer", "logprobs_token_ids", "temperature",
)
"""``dsdrive annotate`` options handed to an annotator's constructor when it takes them."""


def build_annotator(name: str, args: argparse.Namespace | None = None):
    """Instantiate the annotator ``name`` from parsed ``dsdrive annotate`` options.

    ``rule`` takes no options. The others are built by ``cls.from_args(args)`` when the class
    defines it, else ``cls(**options)`` with those of :data:`OPTION_KEYS` that are set and that
    its constructor takes (others are reported on stderr as ignored).

    Raises:
        ValueError: unknown annotator name (lists the known ones), or ``--model`` missing.
        ImportError: the annotator's module or class is missing or fails to import, with the
            original error and what to install.
    """
    if name not in ANNOTATORS:
        raise ValueError(f"--teacher {name!r}: unknown annotator; choose one of {sorted(ANNOTATORS)}")
    module_name, class_name = ANNOTATORS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"--teacher {name}: cannot import {module_name} ({type(e).__name__}: {e}). "
            "Is the annotator implemented in this checkout and are its dependencies installed "
            "(`pip install -e .` installs transformers, qwen-vl-utils, openai)?"
        ) from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ImportError(f"--teacher {name}: {module_name} defines no class {class_name}")
    if name == "rule":
        return cls()
    if hasattr(cls, "from_args"):
        return cls.from_args(args)
    params = inspect.signature(cls).parameters
    given = {k: getattr(args, k) for k in OPTION_KEYS if args is not None and getattr(args, k, None) is not None}
    model = params.get("model")
    if model is not None and model.default is inspect.Parameter.empty and "model" not in given:
        raise ValueError(f"--teacher {name} needs --model (a local path or model id)")
    ignored = sorted(k for k in given if k not in params and k != "batch_size")
    if ignored:
        print(f"dsdrive annotate: --teacher {name} ignores {', '.join('--' + k.replace('_', '-') for k in ignored)}", file=sys.stderr)
    return cls(**{k: v for k, v in given.items() if k in params})
