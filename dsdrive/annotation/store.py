"""Annotation shards on disk: JSON Lines written atomically, one writer per rank.

Layout of an annotations folder::

    annotations-rank{R}-{NNNNN}.jsonl   one record per line:
        {"status": "ok", "annotation": {...Annotation...}}
        {"status": "failed", "failure": {...AnnotationFailure...}}
    logprobs-rank{R}-{NNNNN}.safetensors  the annotator's token log-probs of that shard's samples,
                                        when it records them (:mod:`dsdrive.annotation.logprobs`)
    summary-rank{R}.json                the end-of-run summary of rank R (dsdrive.annotation.annotate)

A shard is written to a temporary file in the same folder (``.tmp-*``), flushed, fsynced and
put in place atomically (``os.link``, which also refuses an existing name; ``os.replace`` on
filesystems without hard links), so a killed annotator leaves either the whole shard or
nothing: never a partial line. Ranks write their own shard names, so
several processes share one folder without a coordinator.

Order of records ("the last one wins" on duplicate sample ids): shards sorted by
(shard index, rank), lines in file order. Within a rank the index grows with time; duplicates
across ranks only arise when a run is resumed with a different world size.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pydantic import ValidationError

from dsdrive.annotation.schema import Annotation, AnnotationFailure

SHARD_RE = re.compile(r"^annotations-rank(\d+)-(\d{5,})\.jsonl$")


def shard_name(rank: int, index: int) -> str:
    """``annotations-rank{rank}-{index:05d}.jsonl``."""
    return f"annotations-rank{rank}-{index:05d}.jsonl"


def list_shards(ann_dir: str | Path) -> list[Path]:
    """Shards of a folder in record order (shard index, rank); [] when the folder is absent."""
    d = Path(ann_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = SHARD_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


def next_shard_index(ann_dir: str | Path, rank: int) -> int:
    """The index the next shard of ``rank`` gets (one past the largest existing one)."""
    idx = [int(m.group(2)) for p in list_shards(ann_dir) if (m := SHARD_RE.match(p.name)) and int(m.group(1)) == rank]
    return max(idx) + 1 if idx else 0


def remove_stale_temp(ann_dir: str | Path, rank: int) -> int:
    """Delete temporary shard files of ``rank`` left by a killed writer; returns how many.

    Only this rank writes ``.tmp-annotations-rank{rank}-*`` files, so this is safe to call when
    the rank starts, with other ranks running.
    """
    d = Path(ann_dir)
    if not d.is_dir():
        return 0
    stale = list(d.glob(f".tmp-annotations-rank{rank}-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def result_record(result: Annotation | AnnotationFailure) -> dict:
    """The JSON line of one teacher result."""
    if isinstance(result, Annotation):
        return {"status": "ok", "annotation": result.model_dump(mode="json")}
    if isinstance(result, AnnotationFailure):
        return {"status": "failed", "failure": result.model_dump(mode="json")}
    raise TypeError(f"expected Annotation or AnnotationFailure, got {type(result).__name__}")


def write_file_exclusive(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (temp file in the same folder + fsync + ``os.link``)
    and never over an existing file; used for annotation and log-prob shards.

    Raises:
        FileExistsError: ``target`` exists (shards are never overwritten).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise FileExistsError(f"{target}: shard exists; refusing to overwrite annotations")
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:  # link fails if the target exists: two writers can never overwrite each other
            os.link(tmp, target)
        except FileExistsError as e:
            raise FileExistsError(f"{target}: shard exists; refusing to overwrite annotations") from e
        except OSError:  # a filesystem without hard links
            os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def write_shard(ann_dir: str | Path, rank: int, index: int, results: list[Annotation | AnnotationFailure]) -> Path:
    """Write one JSONL shard atomically (:func:`write_file_exclusive`).

    Raises:
        FileExistsError: the shard already exists (shards are never overwritten).
    """
    lines = "".join(json.dumps(result_record(r), ensure_ascii=False) + "\n" for r in results)
    return write_file_exclusive(Path(ann_dir) / shard_name(rank, index), lines.encode("utf-8"))


def iter_records(ann_dir: str | Path) -> Iterator[tuple[Path, int, Annotation | AnnotationFailure]]:
    """Every record of every shard, in record order, validated against the schema.

    Yields:
        (shard path, 1-based line number, Annotation | AnnotationFailure).

    Raises:
        ValueError: a line is not JSON, has an unknown ``status`` or fails the schema; the
            message names the file, the line and the field.
    """
    for path in list_shards(ann_dir):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    status = rec.get("status")
                    if status == "ok":
                        item = Annotation.model_validate(rec["annotation"])
                    elif status == "failed":
                        item = AnnotationFailure.model_validate(rec["failure"])
                    else:
                        raise ValueError(f"field 'status' is {status!r}, expected 'ok' or 'failed'")
                except (json.JSONDecodeError, KeyError, ValidationError, ValueError, AttributeError) as e:
                    raise ValueError(f"{path}:{lineno}: bad annotation record: {e}") from e
                yield path, lineno, item


@dataclass
class AnnotationIndex:
    """All records of a folder by sample id (the last record per id wins).

    Attributes:
        annotations: sample id -> last successful annotation.
        failures: sample id -> last failure, for ids without any successful annotation.
        duplicates: number of records whose sample id was seen before (replaced).
        records: total records read.
    """

    annotations: dict[str, Annotation] = field(default_factory=dict)
    failures: dict[str, AnnotationFailure] = field(default_factory=dict)
    duplicates: int = 0
    records: int = 0

    @property
    def done_ids(self) -> set[str]:
        return set(self.annotations) | set(self.failures)


def read_index(ann_dir: str | Path) -> AnnotationIndex:
    """Read every shard of ``ann_dir`` into an :class:`AnnotationIndex` (see its attributes).

    An annotation replaces an earlier annotation or failure of the same id; a failure never
    replaces an earlier successful annotation (it only counts as a duplicate).
    """
    idx = AnnotationIndex()
    seen: set[str] = set()
    for _, _, item in iter_records(ann_dir):
        idx.records += 1
        sid = item.sample_id
        if sid in seen:
            idx.duplicates += 1
        seen.add(sid)
        if isinstance(item, Annotation):
            idx.annotations[sid] = item
            idx.failures.pop(sid, None)
        elif sid not in idx.annotations:
            idx.failures[sid] = item
    return idx


def load_annotations(ann_dir: str | Path) -> dict[str, Annotation]:
    """Successful annotations of a folder by sample id (the last one per id wins)."""
    return read_index(ann_dir).annotations
