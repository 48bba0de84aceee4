"""`dsdrive annotate` / `dsdrive merge`: resume, ranks, summaries, merge by id, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers_annotate import make_dataset

from dsdrive.annotation.annotate import main, merge_main
from dsdrive.annotation.store import iter_records, list_shards, load_annotations, read_index, write_shard
from dsdrive.data.dataset import load_dataset_dir

REPO = Path(__file__).resolve().parents[1]
N = 12  # the last synthetic sample has an all-masked future -> one failure


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "planning", N)
    return tmp_path / "planning"


def record_ids(ann_dir: Path) -> Counter:
    return Counter(item.sample_id for _, _, item in iter_records(ann_dir))


def summary(ann_dir: Path, rank: int = 0) -> dict:
    return json.loads((ann_dir / f"summary-rank{rank}.json").read_text())


def test_resume_with_limit_then_rest(data: Path, tmp_path: Path, capsys):
    out = tmp_path / "ann"
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out), "--limit", "5", "--shard-size", "2", "--batch-size", "2"]) == 0
    assert set(record_ids(out)) == {f"synth-{k:03d}" for k in range(5)}
    assert len(list_shards(out)) == 3  # 2 + 2 + 1
    s1 = summary(out)
    assert (s1["done"], s1["failed"], s1["skipped_already_done"]) == (5, 0, 0)
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out)]) == 0
    s2 = summary(out)
    assert (s2["done"], s2["failed"], s2["skipped_already_done"]) == (N - 6, 1, 5)
    ids = record_ids(out)
    assert len(ids) == N and max(ids.values()) == 1  # each sample exactly once
    assert "done 6, failed 1, skipped (already done) 5" in capsys.readouterr().out
    # a third run has nothing to do
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out)]) == 0
    assert (summary(out)["done"], summary(out)["skipped_already_done"]) == (0, N)
    # --retry-failed runs exactly the failed sample again; the failure is recorded again
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out), "--retry-failed"]) == 0
    assert (summary(out)["failed"], summary(out)["skipped_already_done"]) == (1, N - 1)
    idx = read_index(out)
    assert len(idx.annotations) == N - 1 and set(idx.failures) == {f"synth-{N - 1:03d}"} and idx.duplicates == 1


def test_ranks_split_the_work(data: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "ann"
    for rank in (0, 1, 2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        assert main(["--teacher", "rule", "--data", str(data), "--out", str(out)]) == 0
        assert summary(out, rank)["samples_in_rank"] == N // 3
    ranks = {p.name.split("-")[1] for p in list_shards(out)}
    assert ranks == {"rank0", "rank1", "rank2"}
    ids = record_ids(out)
    assert len(ids) == N and max(ids.values()) == 1
    monkeypatch.setenv("RANK", "3")
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out)]) == 2  # rank outside world


def test_merge_joins_by_id_and_keeps_last_duplicate(data: Path, tmp_path: Path, capsys):
    out = tmp_path / "ann"
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out)]) == 0
    anns = load_annotations(out)
    dup = anns["synth-003"].model_copy(update={"explanation": "replaced by a later shard"})
    write_shard(out, 0, 99, [dup])
    capsys.readouterr()
    merged = tmp_path / "merged"
    assert merge_main(["--data", str(data), "--annotations", str(out), "--out", str(merged)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == N and stats["with_annotation"] == N - 1 and stats["without_annotation"] == 1
    assert stats["duplicate_records"] == 1 and stats["failed"] == 1
    ds = load_dataset_dir(merged)
    by_id = dict(zip(ds["sample_id"], ds["annotation"]))
    assert by_id[f"synth-{N - 1:03d}"] is None
    assert json.loads(by_id["synth-003"])["explanation"] == "replaced by a later shard"
    assert json.loads(by_id["synth-005"]) == anns["synth-005"].model_dump(mode="json")
    assert merge_main(["--data", str(data), "--annotations", str(out), "--out", str(data)]) == 2  # never in place


def test_write_shard_never_overwrites(tmp_path: Path):
    from helpers_annotate import make_sample

    from dsdrive.annotation.annotators.rule import RuleAnnotator

    res = RuleAnnotator().annotate([make_sample("a")])
    write_shard(tmp_path, 0, 0, res)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_shard(tmp_path, 0, 0, res)
    assert [p.name for p in tmp_path.iterdir()] == ["annotations-rank0-00000.jsonl"]  # no temp file left


def test_bad_shard_line_names_file_and_line(tmp_path: Path):
    out = tmp_path / "ann"
    out.mkdir()
    (out / "annotations-rank0-00000.jsonl").write_text('{"status": "ok", "annotation": {"sample_id": "x"}}\n')
    with pytest.raises(ValueError, match=r"annotations-rank0-00000.jsonl:1"):
        load_annotations(out)


def test_missing_teacher_module_is_a_clear_error(data: Path, tmp_path: Path, monkeypatch, capsys):
    import dsdrive.annotation.annotators as teachers

    monkeypatch.setitem(teachers.ANNOTATORS, "openai", ("dsdrive.annotation.annotators.no_such_openai", "OpenAIAnnotator"))
    assert main(["--teacher", "openai", "--data", str(data), "--out", str(tmp_path / "a")]) == 2
    assert "no_such_openai" in capsys.readouterr().err


def _count_shards(out: Path) -> int:
    return len(list_shards(out))


def test_sigkill_mid_run_then_resume_gives_exactly_one_record(data: Path, tmp_path: Path):
    """Kill the annotator with SIGKILL three times mid-run, then finish: one record per sample."""
    out = tmp_path / "ann"
    cmd = [str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable,
           "-m", "dsdrive.annotation.annotate", "--teacher", "rule", "--data", str(data), "--out", str(out),
           "--batch-size", "1", "--shard-size", "1"]
    env = {**os.environ, "DSDRIVE_ANNOTATE_DELAY": "0.15", "PYTHONPATH": str(REPO)}
    for _ in range(3):
        before = _count_shards(out)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _count_shards(out) < before + 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.07)  # land somewhere inside a batch or a write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the annotator finished before it was killed"
    partial = record_ids(out)  # every written line parses (iter_records raises otherwise)
    assert 0 < len(partial) < N and max(partial.values()) == 1
    env.pop("DSDRIVE_ANNOTATE_DELAY")
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ids = record_ids(out)
    assert len(ids) == N and max(ids.values()) == 1
    assert not list(out.glob(".tmp-*"))  # stale temporary files of the rank were removed
    assert summary(out)["skipped_already_done"] == len(partial)


def test_sigterm_finishes_the_batch_writes_and_exits_130(data: Path, tmp_path: Path):
    out = tmp_path / "ann"
    py = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
    cmd = [py, "-m", "dsdrive.annotation.annotate", "--teacher", "rule", "--data", str(data), "--out", str(out),
           "--batch-size", "1", "--shard-size", "1"]
    env = {**os.environ, "DSDRIVE_ANNOTATE_DELAY": "0.2", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while _count_shards(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout
    s = summary(out)
    ids = record_ids(out)
    assert s["interrupted"] == f"signal {int(signal.SIGTERM)}" and 0 < s["done"] == len(ids) < N
    assert "interrupted by signal" in stdout


def test_teacher_that_keeps_raising_stops_the_run(data: Path, tmp_path: Path, monkeypatch, capsys):
    """Two raising batches are recorded as failures; the third stops the run and stays undone."""
    from dsdrive.annotation.annotators.rule import RuleAnnotator

    class Flaky(RuleAnnotator):
        def annotate(self, samples):
            raise ConnectionError("server down")

    import dsdrive.annotation.annotate as annotate_mod

    monkeypatch.setattr(annotate_mod, "build_annotator", lambda name, args: Flaky())
    out = tmp_path / "ann"
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out), "--batch-size", "2"]) == 1
    assert "3 consecutive batches raised" in capsys.readouterr().err
    idx = read_index(out)
    assert not idx.annotations and len(idx.failures) == 4
    assert all("ConnectionError: server down" in f.reason for f in idx.failures.values())
    monkeypatch.undo()
    assert main(["--teacher", "rule", "--data", str(data), "--out", str(out), "--retry-failed"]) == 0
    idx = read_index(out)
    assert len(idx.annotations) == N - 1 and list(idx.failures) == [f"synth-{N - 1:03d}"]
