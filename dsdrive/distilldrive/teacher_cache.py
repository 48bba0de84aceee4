"""Cache of the frozen planning teacher's outputs, keyed by sample id (for student training).

DistillDrive runs its frozen teacher inside the student's forward pass. Its inputs never change
and it runs in eval mode (dropout off; the VAE, if any, is deterministic under its seed), so its
outputs are a pure function of the sample: :func:`build_teacher_cache` runs it once per dataset
and writes them to disk, and :class:`TeacherCache` serves them during student training
(cached == online, checked by a test).

Layout of a cache folder:
    index.json                 {"fingerprint", "shard_size", "shards": [...], "num_samples"}
    shard_00000.safetensors    tensors of up to ``shard_size`` samples; metadata "sample_ids" (JSON)

Tensors per sample: ``plan_queries`` (18, D), ``plan_logits`` (18,), ``plan_waypoints``
(18, 6, 2) cumulative ego-frame metres, ``waypoints`` (6, 3) the teacher's selected plan
``x, y, heading`` (after collision rescoring), ``mode`` () index within the command.

Building is resumable: a shard whose file exists with the expected ids is kept. A folder written
by a different teacher (``fingerprint``: SHA-256 of the weights) is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from tqdm import tqdm

from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.distilldrive.planning_teacher import PlanningTeacher
from dsdrive.distilldrive.teacher_inputs import build_teacher_batch
from dsdrive.data.types import PlanningSample

CACHE_KEYS = ("plan_queries", "plan_logits", "plan_waypoints", "waypoints", "mode")


def teacher_fingerprint(model: PlanningTeacher) -> str:
    """SHA-256 over the teacher's state dict (names and bytes) and its config JSON."""
    h = hashlib.sha256(model.config.to_json_string().encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def teacher_outputs(model: PlanningTeacher, samples: list[PlanningSample]) -> dict[str, torch.Tensor]:
    """Run the teacher in eval mode on ``samples``; returns :data:`CACHE_KEYS` tensors (B, ...)."""
    was_training = model.training
    model.eval()
    batch = build_teacher_batch(samples, **model.config.batch_kwargs()).to(model.device)
    out = model(batch)
    sel = model.select(batch, out)
    model.train(was_training)
    res = {k: out[k] for k in ("plan_queries", "plan_logits", "plan_waypoints")}
    res.update(waypoints=sel["waypoints"], mode=sel["mode"])
    return {k: v.detach().cpu().contiguous() for k, v in res.items()}


def build_teacher_cache(model: PlanningTeacher, samples: list[PlanningSample], directory: str | Path,
                        batch_size: int = 16, shard_size: int = 256) -> TeacherCache:
    """Run the frozen teacher over ``samples`` and write the cache (resumable, shows progress).

    Raises:
        ValueError: duplicate sample ids, or ``directory`` holds a cache of another teacher /
            shard size (delete it or choose another folder).
    """
    directory = Path(directory)
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"build_teacher_cache: duplicate sample ids in the input ({len(ids) - len(set(ids))} duplicates)")
    fp = teacher_fingerprint(model)
    index_path = directory / "index.json"
    if index_path.exists():
        old = json.loads(index_path.read_text())
        if old.get("fingerprint") != fp or old.get("shard_size") != shard_size:
            raise ValueError(f"{index_path}: cache of another teacher or shard size (fingerprint {old.get('fingerprint', '?')[:12]}); "
                             "delete the folder or write elsewhere")
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in tqdm(range(0, len(samples), shard_size), desc="teacher cache", unit="shard"):
        chunk = samples[start:start + shard_size]
        name = f"shard_{start // shard_size:05d}.safetensors"
        path = directory / name
        shards.append(name)
        if path.exists():
            with safe_open(str(path), "pt") as f:
                if json.loads(f.metadata().get("sample_ids", "[]")) == [s.sample_id for s in chunk]:
                    continue
        parts = [teacher_outputs(model, chunk[i:i + batch_size]) for i in range(0, len(chunk), batch_size)]
        tensors = {k: torch.cat([p[k] for p in parts]) for k in CACHE_KEYS}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"sample_ids": json.dumps([s.sample_id for s in chunk])})
        tmp.replace(path)
        write_json_atomic(index_path, {"fingerprint": fp, "shard_size": shard_size, "shards": shards, "num_samples": start + len(chunk)})
    write_json_atomic(index_path, {"fingerprint": fp, "shard_size": shard_size, "shards": shards, "num_samples": len(samples)})
    return TeacherCache(directory)


class TeacherCache:
    """Read a cache written by :func:`build_teacher_cache`.

    Raises:
        FileNotFoundError: no ``index.json`` in ``directory``.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{index_path}: no teacher cache here; build one with build_teacher_cache")
        self.index = json.loads(index_path.read_text())
        self.fingerprint = self.index["fingerprint"]
        self._where: dict[str, tuple[str, int]] = {}
        for name in self.index["shards"]:
            with safe_open(str(self.directory / name), "pt") as f:
                for row, sid in enumerate(json.loads(f.metadata()["sample_ids"])):
                    self._where[sid] = (name, row)
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._where

    def get(self, sample_ids: list[str]) -> dict[str, torch.Tensor]:
        """Stacked cached outputs for ``sample_ids`` (B, ...) in the given order.

        Raises:
            KeyError: a sample id is not in the cache (naming it and the folder).
        """
        rows: dict[str, list[torch.Tensor]] = {k: [] for k in CACHE_KEYS}
        for sid in sample_ids:
            if sid not in self._where:
                raise KeyError(f"{self.directory}: sample id {sid!r} is not in the teacher cache")
            name, row = self._where[sid]
            if name not in self._loaded:
                self._loaded[name] = load_file(str(self.directory / name))
            for k in CACHE_KEYS:
                rows[k].append(self._loaded[name][k][row])
        return {k: torch.stack(v) for k, v in rows.items()}
