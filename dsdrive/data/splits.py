"""Train / validation scene splits.

The shared nuScenes-mini ScenarioNet folder holds the 8 ``mini_train`` scenes; the two official
``mini_val`` scenes are absent, so dsdrive holds out two of the eight: one Boston and one
Singapore scene, both with a moving ego (a held-out stopped scene would say nothing about L2).
"""

from __future__ import annotations

DEFAULT_VAL_SCENES = ("scene-0655", "scene-1077")


def split_scenes(scene_ids: list[str], val_scenes: tuple[str, ...] | list[str] = DEFAULT_VAL_SCENES) -> tuple[list[str], list[str]]:
    """Split scene ids into (train, val). Scenes not named in ``val_scenes`` train.

    If none of ``val_scenes`` is present (another dataset), the last 25 % of the sorted scene
    ids (at least one) are held out, so a split always exists.
    """
    scenes = sorted(set(scene_ids))
    val = [s for s in scenes if s in set(val_scenes)]
    if not val and len(scenes) > 1:
        val = scenes[-max(1, len(scenes) // 4):]
    return [s for s in scenes if s not in val], val
