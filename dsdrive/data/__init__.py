"""Stage 1, data: the planning-sample contract and everything that reads or writes it.

Modules:
    types          the contract: PlanningInputs (what a planner may see), PlanningTargets (the
                   future), PlanningSample; ego frame x forward, y left, metres, seconds, radians
    world_state    the one feature path: a world state at time t -> PlanningInputs, used by every
                   builder (data_builders/) and by the closed-loop simulator adapter
    map_index      map polylines around a pose (ROI box, nearest first, resampled)
    mirror         left-right mirroring of a sample (y, heading, LEFT <-> RIGHT)
    dataset        Hugging Face ``datasets`` folders of samples (save, load, provenance filter)
    splits         held-out scenes; no silent substitute split
    camera         calibration and projection (cam2img, cam2ego)
    paths          default data, prompts and output folders
    safe_pickle    ScenarioNet pickles loaded without running code
    atomic_io      writes that never leave a half-written file
"""
