"""Where dsdrive finds its default data, prompts and working folders."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS_DIR = Path(os.environ.get("DSDRIVE_PROMPTS", REPO_ROOT / "prompts"))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATA_ENV = "DSDRIVE_SCENARIOS"
"""Environment variable naming a ScenarioNet folder to use when ``--input`` is not given."""

GET_DATA_HELP = """\
No ScenarioNet scenes found. Either
  * pass --input PATH (a folder of ScenarioNet *.pkl scenarios), or
  * set DSDRIVE_SCENARIOS=PATH, or
  * make them from nuScenes-mini:
      1. download v1.0-mini from https://www.nuscenes.org/download (free account) and unpack
         it to ~/data/nuscenes (folders maps/, samples/, sweeps/, v1.0-mini/);
      2. pip install scenarionet  (https://github.com/metadriverse/scenarionet);
      3. python -m scenarionet.convert_nuscenes -d ~/data/nuscenes-mini-scenarionet \\
             --split v1.0-mini --dataroot ~/data/nuscenes
      4. DSDRIVE_SCENARIOS=~/data/nuscenes-mini-scenarionet
  * or generate scenes with MetaDrive: dsdrive build --source metadrive-pg --num-scenarios 8 --out DIR
"""


def default_scenarios_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The ScenarioNet folder to use: ``explicit``, else ``$DSDRIVE_SCENARIOS``, else
    ``../shared/data/nuscenes-mini-scenarionet`` when present.

    Raises:
        FileNotFoundError: none of these exists; the message says how to get nuScenes-mini and
            convert it with ScenarioNet.
    """
    for candidate in (explicit, os.environ.get(DATA_ENV), SHARED_DATA / "nuscenes-mini-scenarionet"):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
        if candidate and candidate is explicit:
            raise FileNotFoundError(f"--input {candidate}: no such folder.\n\n{GET_DATA_HELP}")
    raise FileNotFoundError(GET_DATA_HELP)
