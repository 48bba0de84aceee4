"""Train / validation scene splits.

The shared nuScenes-mini ScenarioNet folder holds the 8 ``mini_train`` scenes; the two official
``mini_val`` scenes are absent, so dsdrive holds out two of the eight: one Boston and one
Singapore scene, both with a moving ego (a held-out stopped scene would say nothing about L2).

There is no fallback split: a dataset that holds none of the requested held-out scenes is an
error that names the scenes expected and the scenes present (issue 10: no silent evaluation
subsets). Holding out nothing is asked for explicitly (``none``; :func:`parse_scene_list`).
"""

from __future__ import annotations

DEFAULT_VAL_SCENES = ("scene-0655", "scene-1077")
NO_SCENES = "none"
"""Command-line value that holds out no scene (train on everything, evaluate nothing)."""


def parse_scene_list(spec: str) -> tuple[str, ...]:
    """Scene ids from a command-line value: comma-separated ids (spaces stripped); ``none`` or an
    empty string give ``()`` (no held-out scene).

    Raises:
        ValueError: ``none`` is mixed with scene ids (``"none,scene-0061"``).
    """
    ids = tuple(s.strip() for s in spec.split(",") if s.strip())
    if NO_SCENES in ids:
        if len(ids) > 1:
            raise ValueError(f"scene list {spec!r}: {NO_SCENES!r} cannot be combined with scene ids")
        return ()
    return ids


def split_scenes(
    scene_ids: list[str],
    val_scenes: tuple[str, ...] | list[str] = DEFAULT_VAL_SCENES,
    *,
    strict: bool = False,
    where: str = "the dataset",
    hint: str = "name held-out scenes present in the data, or hold out none",
) -> tuple[list[str], list[str]]:
    """Split scene ids into (train, val), both sorted. Scenes not named in ``val_scenes`` train.

    Args:
        scene_ids: scene ids present in the data (duplicates allowed).
        val_scenes: scene ids to hold out; empty = hold out nothing (``val`` is ``[]``).
        strict: every scene of ``val_scenes`` must be present (set it where the held-out scenes
            are evaluated, so that a partial split is never scored as if it were whole). Without
            it, absent held-out scenes are simply not in the data and at least one must be present.
        where: the data's name in error messages (a folder path).
        hint: what the user can do instead, appended to error messages (e.g. which flag to pass).

    Raises:
        ValueError: ``val_scenes`` is non-empty and none of it is present, or ``strict`` and some
            of it is absent; the message names ``where``, the expected, absent and present scenes.
    """
    scenes = sorted(set(scene_ids))
    wanted = list(dict.fromkeys(val_scenes))
    if not wanted:
        return scenes, []
    absent = [s for s in wanted if s not in set(scenes)]
    if len(absent) == len(wanted):
        raise ValueError(f"{where}: none of the held-out scenes {wanted} is in the data (scenes present: {scenes}); {hint}")
    if strict and absent:
        raise ValueError(f"{where}: held-out scenes {absent} (of {wanted}) are not in the data (scenes present: {scenes}); {hint}")
    val = [s for s in scenes if s in set(wanted)]
    return [s for s in scenes if s not in set(val)], val
