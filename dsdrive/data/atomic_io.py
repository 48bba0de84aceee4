"""Atomic file writes: a temporary file in the same folder, flushed, then ``os.replace``.

A reader (or a rerun after a crash) sees either the old file or the new one, never a half-written
one. Used for every report, index, checkpoint and scenario file dsdrive writes outside the
``datasets`` and annotation-shard writers (which have their own folder/shard renames).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """JSON version of :func:`write_bytes_atomic` (non-JSON values are written with ``str``)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=str))
