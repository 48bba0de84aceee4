"""Atomic writes: a failed write leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import json

import pytest

from dsdrive.data.atomic_io import write_bytes_atomic, write_json_atomic, write_text_atomic


def test_write_then_overwrite(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "report.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_bytes_atomic(tmp_path / "model.pt", b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("dsdrive.data.atomic_io.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # the temporary file is removed


def test_json_falls_back_to_str_for_paths(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"out": tmp_path})
    assert json.loads(path.read_text())["out"] == str(tmp_path)
