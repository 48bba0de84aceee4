"""Build the tiny-vl recipe's camera planning datasets from the real camera data in ../shared/data.

Run as:
    python recipes/configs/tiny-vl/build_data.py --out /tmp/V/camera_planning
    accelerate launch recipes/distill.py --config recipes/configs/tiny-vl/distill.yaml

Writes two planning datasets (:func:`dsdrive.data.dataset.save_samples`):

* ``<out>/train``: the first keyframe of scene-0061 with its six real cameras and calibration
  (``nuscenes-sample-0061``; ego status and ground-truth future from the ScenarioNet copy of the same
  scene, 69 ground-truth boxes as agents), labelled by the rule annotator (reasoning, meta-action,
  per-agent risk): the one camera sample here that has targets;
* ``<out>/drivelm``: the nine DriveLM keyframes' six real images each, with no calibration (identity
  placeholders, so the PV -> BEV lift skips them), no ego state and no future: samples to plan from,
  not to train on.

A user's own nuScenes gives camera samples at scale through nuscenes-devkit
(``dsdrive build --source nuscenes``, which writes each keyframe's cameras with ``cam2ego``).
The sample builders are library code: :func:`data_builders.nuscenes_sample.nuscenes_sample_0061` and
:func:`data_builders.drivelm.keyframe_planning_sample` (the tests use them too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_builders.drivelm import DRIVELM_SAMPLE, keyframe_planning_sample
from data_builders.nuscenes_sample import NUSCENES_INFO, nuscenes_sample_0061
from dsdrive.annotation.annotators.rule import RuleAnnotator
from dsdrive.annotation.schema import AnnotationFailure
from dsdrive.data.dataset import save_samples


def main(argv: list[str] | None = None) -> int:
    """Write ``--out``/train and ``--out``/drivelm; returns 0.

    Raises:
        FileNotFoundError: the shared nuScenes sample or the DriveLM sample is missing (naming the path).
        ValueError: the rule annotator cannot label the scene-0061 keyframe (its reason).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (train/ and drivelm/ are written in it)")
    a = p.parse_args(argv)
    for path in (NUSCENES_INFO, DRIVELM_SAMPLE / "train_sample.json"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the shared real camera data, see ../shared/data/README.md)")
    sample = nuscenes_sample_0061()
    ann = RuleAnnotator().annotate([sample])[0]
    if isinstance(ann, AnnotationFailure):
        raise ValueError(f"sample {sample.sample_id}: the rule annotator failed: {ann.reason}")
    sample.annotation = ann.model_dump(mode="json")
    out = Path(a.out)
    save_samples([sample], out / "train")
    drivelm = [keyframe_planning_sample(i) for i in range(9)]
    save_samples(drivelm, out / "drivelm")
    print(f"{out / 'train'}: 1 sample ({sample.sample_id}, {len(sample.inputs.cameras)} cameras, "
          f"{len(sample.inputs.agents)} agents, meta-action {ann.meta_action}); "
          f"{out / 'drivelm'}: {len(drivelm)} image-only keyframes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
