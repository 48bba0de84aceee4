"""``dsdrive annotate`` / ``dsdrive merge``: annotate planning samples with an annotator, resumably.

Run as:
    dsdrive annotate --teacher rule --data /tmp/planning --out /tmp/annotations
    dsdrive annotate --teacher qwen-vl --model /models/Qwen2.5-VL-7B --data DIR --out DIR --batch-size 4
    accelerate launch --num_processes 4 -m dsdrive.annotation.annotate --teacher qwen-vl --model PATH --data DIR --out DIR
    dsdrive merge --data /tmp/planning --annotations /tmp/annotations --out /tmp/planning_annotated

Resumable: sample ids already in ``--out`` (annotations and failures; failures are retried
with ``--retry-failed``) are skipped. Results are buffered and written as atomic JSONL shards
(:mod:`dsdrive.annotation.store`) every ``--shard-size`` samples or ``--flush-seconds``; a killed
run loses at most the unwritten buffer, never a written record. Multi-process: rank R of W
(from accelerate's ``PartialState`` under ``accelerate launch``, else env ``RANK`` /
``WORLD_SIZE``, else 0 / 1) takes ``samples[R::W]`` and writes its own shards; no coordinator.

Stopping: SIGTERM (a scheduler's preemption) finishes the batch in flight, writes the buffer
and exits with 130; Ctrl-C writes the buffer (the batch in flight is dropped); SIGKILL loses
only the unwritten buffer.

Token log-probs (``--logprobs K``; annotators ``hf-llm`` and ``openai``): the annotator's top-k
token log-probs of each annotated sample are written beside each annotation shard as
``logprobs-rank{R}-{NNNNN}.safetensors`` (:mod:`dsdrive.annotation.logprobs`), the log-prob shard
first; a sample then counts as done only when its annotation *and* its log-probs are in ``--out``
(so adding ``--logprobs`` to an annotated folder redoes the samples without them; the new record
wins). ``dsdrive distill --teacher_logprobs ANN`` reads them by path.

Test hook: env ``DSDRIVE_ANNOTATE_DELAY`` (seconds) sleeps before each batch (crash tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from dsdrive.annotation.annotators import ANNOTATORS, build_annotator
from dsdrive.annotation.logprobs import logprob_sample_ids, remove_orphan_logprob_shards, write_logprob_shard
from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.annotation.store import (
    list_shards,
    load_annotations,
    next_shard_index,
    read_index,
    remove_stale_temp,
    write_shard,
)
from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.data.dataset import load_dataset_dir, save_dataset_atomic
from dsdrive.data.types import PlanningSample

__all__ = ["main", "merge_main", "load_annotations", "run_annotate", "rank_and_world_size"]
MAX_FAILED_BATCHES = 3
"""Consecutive batches that raise before the run stops (e.g. a dead server or OOM). Earlier
raising batches are recorded as failures (``--retry-failed`` reruns them); the last is not."""


def build_parser() -> argparse.ArgumentParser:
    """The ``dsdrive annotate`` options (annotator, data, output, batching, VLM/API settings)."""
    p = argparse.ArgumentParser(prog="dsdrive annotate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotator", "--teacher", dest="teacher", required=True, choices=sorted(ANNOTATORS),
                   help="the annotator (label-writing teacher) to run; --teacher is the same flag")
    p.add_argument("--data", required=True, help="planning dataset folder (dsdrive build --out)")
    p.add_argument("--out", required=True, help="annotations folder (shards are added; existing ones resume)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per annotator call")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples of the dataset (before the rank split)")
    p.add_argument("--shard-size", type=int, default=512, help="records per shard (a shard is written when the buffer reaches it)")
    p.add_argument("--flush-seconds", type=float, default=120.0, help="also write the buffer after this many seconds")
    p.add_argument("--retry-failed", action="store_true", help="annotate again the samples whose earlier result was a failure")
    g = p.add_argument_group("VLM / API annotators (qwen-vl, openai)")
    g.add_argument("--model", default=None, help="model path or id")
    g.add_argument("--prompt", default=None, help="prompt name/version under prompts/ (annotator default if unset)")
    g.add_argument("--concurrency", type=int, default=None, help="parallel requests (openai)")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (openai)")
    g.add_argument("--max-pixels", type=int, default=None, help="image resize budget (qwen-vl)")
    g.add_argument("--min-pixels", type=int, default=None, help="smallest image resize budget (qwen-vl)")
    g.add_argument("--load-in-4bit", action="store_true", default=None, help="bitsandbytes 4-bit weights (qwen-vl)")
    g.add_argument("--load-in-8bit", action="store_true", default=None, help="bitsandbytes 8-bit weights (qwen-vl)")
    g.add_argument("--max-new-tokens", type=int, default=None, help="answer length cap (qwen-vl)")
    g.add_argument("--max-tokens", type=int, default=None, help="answer length cap (openai)")
    g.add_argument("--max-retries", type=int, default=None, help="retries on 429/5xx/timeouts (openai)")
    g.add_argument("--timeout", type=float, default=None, help="request timeout in seconds (openai)")
    g.add_argument("--hindsight", action="store_true", default=None, help="show the annotator the ground-truth future")
    g = p.add_argument_group("token log-probs for token-level KD (hf-llm, openai)")
    g.add_argument("--logprobs", type=int, default=None, metavar="K",
                   help="record the top-K log-probs of every generated token (openai: K <= 20); 0/unset = none")
    g.add_argument("--tokenizer", default=None, help="the served model's tokenizer folder, to map tokens to ids (openai)")
    g.add_argument("--logprobs-token-ids", action="store_true", default=None,
                   help="ask vLLM for token ids (return_tokens_as_token_ids) instead of mapping token strings (openai)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy (hf-llm; default 0)")
    return p


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size): accelerate's PartialState under ``accelerate launch``, else env
    ``RANK`` / ``WORLD_SIZE``, else (0, 1)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if any(k.startswith("ACCELERATE_") for k in os.environ) and world > 1:
        from accelerate import PartialState  # heavy (imports torch): only under `accelerate launch`

        state = PartialState()
        if int(state.num_processes) == world:
            return int(state.process_index), int(state.num_processes)
        # e.g. --multi_gpu on a machine without CUDA: accelerate falls back to one process
        print(f"dsdrive annotate: accelerate reports {state.num_processes} process(es) but WORLD_SIZE={world}; "
              f"using RANK={rank} / WORLD_SIZE={world}", file=sys.stderr)
    if not 0 <= rank < world:
        raise ValueError(f"env RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return rank, world


def _to_samples(rows: dict, teacher_id: str, prompt_version: str):
    """Rows (a column dict) -> PlanningSamples; a row that does not convert becomes a failure."""
    n = len(rows["sample_id"])
    good, bad = [], []
    for j in range(n):
        row = {k: v[j] for k, v in rows.items()}
        try:
            good.append(PlanningSample.from_row(row))
        except (ValueError, KeyError, TypeError) as e:
            bad.append(AnnotationFailure(sample_id=str(row["sample_id"]), teacher=teacher_id, prompt_version=prompt_version,
                                         reason=f"bad planning row: {type(e).__name__}: {e}"))
    return good, bad


def run_annotate(args: argparse.Namespace, annotator=None) -> dict:
    """Annotate ``args.data`` into ``args.out`` (see the module docstring); returns the summary."""
    rank, world = rank_and_world_size()
    out = Path(args.out)
    ds = load_dataset_dir(args.data)
    ids = list(ds["sample_id"])
    n_total = len(ids) if args.limit is None else min(args.limit, len(ids))
    remove_stale_temp(out, rank)
    remove_orphan_logprob_shards(out, rank)
    annotator = annotator or build_annotator(args.teacher, args)
    records_logprobs = bool(getattr(annotator, "records_logprobs", False))
    index = read_index(out)
    annotated = set(index.annotations) & logprob_sample_ids(out) if records_logprobs else set(index.annotations)
    done = annotated | (set() if args.retry_failed else set(index.failures) - set(index.annotations))
    mine = list(range(rank, n_total, world))
    seen: set[str] = set()
    todo, skipped, dup_in_data = [], 0, 0
    for i in mine:
        sid = ids[i]
        if sid in seen:
            dup_in_data += 1
            continue
        seen.add(sid)
        if sid in done:
            skipped += 1
        else:
            todo.append(i)
    delay = float(os.environ.get("DSDRIVE_ANNOTATE_DELAY", "0") or 0)
    shard_idx = next_shard_index(out, rank)
    buffer: list[Annotation | AnnotationFailure] = []
    lp_buffer: dict = {}  # sample id -> TokenLogprobs of the buffered annotations
    counts = {"done": 0, "failed": 0, "shards": 0, "logprobs": 0}
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal shard_idx, last_flush
        if buffer:
            if lp_buffer:  # the log-prob shard first: an annotation shard never lacks its log-probs
                write_logprob_shard(out, rank, shard_idx, annotator.logprobs_header, dict(lp_buffer))
                counts["logprobs"] += len(lp_buffer)
                lp_buffer.clear()
            write_shard(out, rank, shard_idx, buffer)
            shard_idx += 1
            counts["shards"] += 1
            buffer.clear()
        last_flush = time.monotonic()

    stop_requested: list[str] = []

    def on_term(signum, frame):  # SIGTERM: finish the batch in flight, write the buffer, stop
        stop_requested.append(f"signal {signum}")

    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    t0 = time.monotonic()
    failed_batches = 0
    interrupted = None
    bar = tqdm(total=len(todo), desc=f"annotate[{args.teacher}] rank {rank}/{world}", unit="sample",
               disable=None, file=sys.stderr)
    try:
        for b in range(0, len(todo), args.batch_size):
            if delay:
                time.sleep(delay)
            if stop_requested:
                interrupted = stop_requested[0]
                break
            batch_idx = todo[b:b + args.batch_size]
            samples, results = _to_samples(ds[batch_idx], annotator.teacher_id, annotator.prompt_version)
            try:
                got = annotator.annotate(samples) if samples else []
                failed_batches = 0
            except Exception as e:  # an annotator crash fails this batch, recorded per sample
                failed_batches += 1
                got = [AnnotationFailure(sample_id=s.sample_id, teacher=annotator.teacher_id, prompt_version=annotator.prompt_version,
                                         reason=f"annotator raised {type(e).__name__}: {e}") for s in samples]
                if failed_batches >= MAX_FAILED_BATCHES:  # this batch stays undone: a rerun retries it
                    raise RuntimeError(f"{MAX_FAILED_BATCHES} consecutive batches raised; last: {type(e).__name__}: {e}") from e
            if len(got) != len(samples) or [g.sample_id for g in got] != [s.sample_id for s in samples]:
                raise RuntimeError(f"annotator {annotator.teacher_id} returned {[g.sample_id for g in got]} for {[s.sample_id for s in samples]}")
            results.extend(got)
            if records_logprobs:
                ok = {r.sample_id for r in got if isinstance(r, Annotation)}
                lp_buffer.update({sid: rec for sid, rec in annotator.pop_token_logprobs().items() if sid in ok})
            for r in results:
                counts["done" if isinstance(r, Annotation) else "failed"] += 1
            buffer.extend(results)
            bar.update(len(batch_idx))
            bar.set_postfix(ok=counts["done"], failed=counts["failed"])
            if len(buffer) >= args.shard_size or time.monotonic() - last_flush >= args.flush_seconds:
                flush()
    except KeyboardInterrupt:
        interrupted = "KeyboardInterrupt"
    finally:
        flush()
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        annotator.close()
    seconds = time.monotonic() - t0
    usage = annotator.usage
    summary = {
        "rank": rank, "world_size": world, "teacher": annotator.teacher_id, "prompt_version": annotator.prompt_version,
        "data": str(args.data), "samples_in_rank": len(mine), "done": counts["done"], "failed": counts["failed"],
        "skipped_already_done": skipped, "duplicate_ids_in_data": dup_in_data, "shards_written": counts["shards"],
        "logprobs_written": counts["logprobs"],
        "tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out, "requests": usage.requests,
        "seconds": round(seconds, 3), "samples_per_second": round((counts["done"] + counts["failed"]) / max(seconds, 1e-9), 2),
        "interrupted": interrupted,
    }
    write_json_atomic(out / f"summary-rank{rank}.json", summary)
    print(f"[rank {rank}/{world}] {annotator.teacher_id}: done {summary['done']}, failed {summary['failed']}, "
          f"skipped (already done) {skipped}, tokens in/out {usage.tokens_in}/{usage.tokens_out}, "
          f"{summary['samples_per_second']} samples/s" + (f", interrupted by {interrupted}" if interrupted else ""))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``dsdrive annotate`` entry point (options: ``dsdrive annotate --help``)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.shard_size < 1:
        raise SystemExit(f"--batch-size ({args.batch_size}) and --shard-size ({args.shard_size}) must be >= 1")
    try:
        summary = run_annotate(args)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"dsdrive annotate: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # the annotator keeps failing; what was annotated is written
        print(f"dsdrive annotate: stopped: {e}", file=sys.stderr)
        return 1
    return 130 if summary["interrupted"] else 0


def merge_main(argv: list[str] | None = None) -> int:
    """``dsdrive merge --data DIR --annotations DIR --out DIR``: join annotations by sample id.

    The dataset's ``annotation`` column becomes the JSON of each sample's annotation (samples
    without one keep their previous value). Prints counts: with / without annotation, failures,
    duplicate records (the last one is kept), annotations of ids absent from the dataset.
    """
    p = argparse.ArgumentParser(prog="dsdrive merge", description=merge_main.__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="planning dataset folder")
    p.add_argument("--annotations", required=True, help="annotations folder (dsdrive annotate --out)")
    p.add_argument("--out", required=True, help="output dataset folder (must differ from --data)")
    args = p.parse_args(argv)
    try:
        stats = merge(args.data, args.annotations, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"dsdrive merge: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2))
    return 0


def merge(data_dir: str | Path, ann_dir: str | Path, out_dir: str | Path) -> dict:
    """Library form of :func:`merge_main`; returns the counts.

    Raises:
        ValueError: ``out_dir`` is ``data_dir``; FileNotFoundError: no dataset / no shards.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.resolve() == data_dir.resolve():
        raise ValueError(f"--out {out_dir} is the --data folder; write the merged dataset elsewhere")
    if not list_shards(ann_dir):
        raise FileNotFoundError(f"{ann_dir}: no annotations-rank*-*.jsonl shards")
    ds = load_dataset_dir(data_dir)
    index = read_index(ann_dir)
    payload = {sid: json.dumps(a.model_dump(mode="json"), ensure_ascii=False) for sid, a in index.annotations.items()}
    ids = list(ds["sample_id"])

    def join(batch):
        batch["annotation"] = [payload.get(sid, old) for sid, old in zip(batch["sample_id"], batch["annotation"])]
        return batch

    merged = ds.map(join, batched=True, features=ds.features, desc="merge annotations")
    save_dataset_atomic(merged, out_dir)
    with_ann = sum(1 for sid in ids if sid in payload)
    stats = {
        "samples": len(ids), "with_annotation": with_ann, "without_annotation": len(ids) - with_ann,
        "failed": sum(1 for sid in ids if sid in index.failures),
        "duplicate_records": index.duplicates, "duplicate_policy": "last record kept",
        "annotations_not_in_data": len(set(payload) - set(ids)), "duplicate_ids_in_data": len(ids) - len(set(ids)),
        "out": str(out_dir),
    }
    return stats


if __name__ == "__main__":
    sys.exit(main())
