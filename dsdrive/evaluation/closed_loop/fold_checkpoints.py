"""Which cross-validation checkpoint drives which scene, so that no scene is driven by a planner
that trained on it (``dsdrive closed-loop --cv-runs CV_OUT/runs/PLANNER [--cv-seed S]``).

``dsdrive cross-validate --out CV_OUT`` (:mod:`dsdrive.evaluation.cross_validate`) writes
``CV_OUT/cv_settings.json`` (``fold_scenes``: the scene ids of each fold) and, per planner, fold
and seed, ``CV_OUT/runs/PLANNER/foldF-seedS/checkpoint/``, trained on every fold but F. For each
scene this module picks the checkpoint of the fold that holds it out, and checks what that
checkpoint records itself (:func:`dsdrive.evaluation.cross_validate.recorded_training_scenes`:
``eval_heldout.json`` of the distillation / planning-teacher stages, ``trained_on_scenes`` of
ego_mlp's ``config.json``; else ``train.json``'s ``checkpoint_train_scenes``) with
:func:`dsdrive.evaluation.cross_validate.check_no_overlap`: the checkpoint's training scenes must
not include the fold's scenes, and the scenes it held out must be exactly the fold's.

Refused (:class:`ValueError`, one line naming the folder, scene or checkpoint): a folder that is
not ``runs/PLANNER`` of a cross-validation output, a planner with nothing trained
(``constant_velocity``), a scene that no fold held out, a fold whose checkpoint for that seed is
missing, a checkpoint that records no training scenes (its split cannot be checked) or one that
trained on a scene it is asked to drive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dsdrive.evaluation.cross_validate import RECIPES, Unit, check_no_overlap, recorded_training_scenes

SETTINGS_FILE = "cv_settings.json"


@dataclass(frozen=True)
class FoldCheckpoint:
    """One fold's checkpoint of a cross-validated planner.

    Attributes:
        recipe: the cross-validation planner name (folder name under ``runs/``, e.g. ``student_kd``).
        registry: its name in :mod:`dsdrive.planners.registry` (e.g. ``student``), used to load it.
        fold, seed: the unit (``foldF-seedS``).
        directory: the checkpoint folder.
        held_out: the fold's scene ids (never trained on).
        trained_on: the scene ids the checkpoint records as its training scenes.
    """

    recipe: str
    registry: str
    fold: int
    seed: int
    directory: Path
    held_out: tuple[str, ...]
    trained_on: tuple[str, ...]

    @property
    def label(self) -> str:
        """``fold0-seed0``: the unit folder name."""
        return f"fold{self.fold}-seed{self.seed}"

    def to_dict(self) -> dict:
        """JSON-ready record (for ``report.json``)."""
        return {"checkpoint": str(self.directory), "recipe": self.recipe, "fold": self.fold, "seed": self.seed,
                "held_out": list(self.held_out), "trained_on": list(self.trained_on)}


def runs_recipe(runs_dir: str | Path) -> tuple[str, Path]:
    """``(recipe name, CV_OUT)`` of a ``CV_OUT/runs/PLANNER`` folder.

    Raises:
        ValueError: not a folder, its name is no cross-validated planner, the planner trains
            nothing, or ``CV_OUT/cv_settings.json`` is missing.
    """
    runs = Path(runs_dir)
    if not runs.is_dir():
        raise ValueError(f"--cv-runs {runs}: no such folder (expected CV_OUT/runs/PLANNER of `dsdrive cross-validate --out CV_OUT`)")
    recipe = runs.name
    if recipe not in RECIPES:
        raise ValueError(f"--cv-runs {runs}: folder name {recipe!r} is no cross-validated planner ({', '.join(RECIPES)})")
    if RECIPES[recipe].stage is None:
        raise ValueError(f"--cv-runs {runs}: {recipe} trains nothing, so it has no fold checkpoints; run it without --cv-runs")
    cv_out = runs.parent.parent
    if runs.parent.name != "runs" or not (cv_out / SETTINGS_FILE).is_file():
        raise ValueError(f"--cv-runs {runs}: {cv_out / SETTINGS_FILE} missing (expected CV_OUT/runs/PLANNER of `dsdrive cross-validate`)")
    return recipe, cv_out


def read_fold_scenes(cv_out: Path) -> list[list[str]]:
    """``fold_scenes`` of ``CV_OUT/cv_settings.json`` (list of folds, each a list of scene ids).

    Raises:
        ValueError: the file is not JSON or its ``fold_scenes`` is not a list of lists of strings.
    """
    path = Path(cv_out) / SETTINGS_FILE
    try:
        folds = json.loads(path.read_text()).get("fold_scenes")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a cross-validation settings file ({e})") from e
    if not isinstance(folds, list) or not all(isinstance(f, list) and all(isinstance(s, str) for s in f) for f in folds):
        raise ValueError(f"{path}: fold_scenes={folds!r}, expected a list of lists of scene ids")
    return folds


def _recorded(recipe: str, unit_dir: Path) -> tuple[list[str] | None, list[str] | None]:
    """(training scenes, held-out scenes) the checkpoint records, else ``train.json``'s record."""
    trained, held_out = recorded_training_scenes(recipe, unit_dir / "checkpoint")
    marker = unit_dir / "train.json"
    if trained is None and marker.is_file():
        trained = json.loads(marker.read_text()).get("checkpoint_train_scenes")
    return trained, held_out


def fold_checkpoint(runs_dir: str | Path, fold: int, seed: int) -> FoldCheckpoint:
    """The checked checkpoint of ``runs_dir/fold{fold}-seed{seed}`` (module docstring).

    Raises:
        ValueError: bad folder (:func:`runs_recipe`), no such fold, missing checkpoint, no recorded
            training scenes, or a split that overlaps the fold's scenes.
    """
    recipe, cv_out = runs_recipe(runs_dir)
    folds = read_fold_scenes(cv_out)
    if not 0 <= fold < len(folds):
        raise ValueError(f"{cv_out / SETTINGS_FILE}: no fold {fold} (it has {len(folds)})")
    unit = Unit(recipe, fold, seed, list(folds[fold]), sorted(s for j, f in enumerate(folds) if j != fold for s in f), cv_out)
    ckpt = unit.dir / "checkpoint"
    if not ckpt.is_dir():
        raise ValueError(f"--cv-runs {runs_dir} --cv-seed {seed}: no checkpoint {ckpt} for fold {fold} (held-out scenes {unit.test_scenes})")
    trained, held_out = _recorded(recipe, unit.dir)
    if trained is None:
        raise ValueError(f"{ckpt}: records no training scenes (no eval_heldout.json / trained_on_scenes / train.json), "
                         f"so it cannot be shown never to have trained on {unit.test_scenes}")
    try:
        check_no_overlap(unit, trained, held_out)
    except RuntimeError as e:
        raise ValueError(f"{ckpt}: {e}") from e
    return FoldCheckpoint(recipe, RECIPES[recipe].registry, fold, seed, ckpt, tuple(unit.test_scenes), tuple(sorted(trained)))


def checkpoints_for_scenes(runs_dir: str | Path, scene_ids: list[str], seed: int = 0) -> dict[str, FoldCheckpoint]:
    """{scene id: the checkpoint of the fold that held it out}, every one checked (module docstring).

    Args:
        runs_dir: ``CV_OUT/runs/PLANNER`` of ``dsdrive cross-validate``.
        scene_ids: the scenes to drive (e.g. ``scene-0061``, as in ``cv_settings.json``).
        seed: the training seed of the units to use.

    Raises:
        ValueError: see :func:`fold_checkpoint`; and a scene that no fold held out (names the
            scene and the folds).
    """
    recipe, cv_out = runs_recipe(runs_dir)
    folds = read_fold_scenes(cv_out)
    fold_of = {s: k for k, f in enumerate(folds) for s in f}
    missing = [s for s in scene_ids if s not in fold_of]
    if missing:
        raise ValueError(f"--cv-runs {runs_dir}: scene(s) {missing} held out by no fold of {cv_out / SETTINGS_FILE} "
                         f"(folds: {folds}); no {recipe} checkpoint is known never to have trained on them")
    cache: dict[int, FoldCheckpoint] = {}
    out = {}
    for s in scene_ids:
        k = fold_of[s]
        if k not in cache:
            cache[k] = fold_checkpoint(runs_dir, k, seed)
        out[s] = cache[k]
    return out
