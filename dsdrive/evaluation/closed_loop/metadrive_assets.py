"""Offline detection and set-up of MetaDrive's asset folder.

MetaDrive 0.4.3 (``metadrive/engine/base_engine.py::BaseEngine.try_pull_asset``) downloads
``assets.zip`` from GitHub when its engine starts and either

* ``metadrive/assets/`` is missing, or
* ``AssetLoader.should_update_asset()`` is true: ``assets/version.txt`` does not hold the
  package version (``metadrive.version.VERSION``) or the texture
  ``assets/textures/grass1/GroundGrassGreen002_COL_1K.jpg`` is missing.

State and top-down (BEV) simulation with ``use_render=False`` never loads a 3D model, texture or
shader, so with no network we create exactly those two files (a *stub*) and say so with a
warning; rendering a 3D camera then still needs the real assets
(``python -m metadrive.pull_asset --update``). The stub carries a marker file
(:data:`STUB_MARKER`) so :func:`asset_status` can tell a stub from a real download.
Nothing here ever downloads.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STUB_MARKER = "DSDRIVE_OFFLINE_STUB"
"""File written inside a stub asset folder (its text explains what the stub is)."""
_STUB_WARNED = False
CHECKED_TEXTURE = ("textures", "grass1", "GroundGrassGreen002_COL_1K.jpg")
"""The texture ``AssetLoader.should_update_asset`` checks (MetaDrive PR #531)."""


@dataclass
class AssetStatus:
    """What MetaDrive would find in its asset folder.

    Attributes:
        asset_dir: ``<site-packages>/metadrive/assets``.
        expected_version: the package version MetaDrive expects in ``version.txt``.
        found_version: the version in ``version.txt`` or None when the file is missing.
        texture_present: whether the texture MetaDrive checks exists.
        stub: whether the folder is our offline stub (no 3D models/textures).
    """

    asset_dir: Path
    expected_version: str
    found_version: str | None
    texture_present: bool
    stub: bool

    @property
    def ready(self) -> bool:
        """True when MetaDrive will not try to download anything on engine start."""
        return self.found_version == self.expected_version and self.texture_present


def metadrive_asset_dir() -> Path:
    """``metadrive/assets`` of the installed package (found without importing the engine).

    Raises:
        ModuleNotFoundError: metadrive-simulator is not installed (``pip install -e .[sim]``).
    """
    spec = importlib.util.find_spec("metadrive")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("metadrive-simulator is not installed: pip install -e '.[sim]' (metadrive-simulator==0.4.3)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def asset_status() -> AssetStatus:
    """Inspect the asset folder exactly as ``BaseEngine.try_pull_asset`` would."""
    from metadrive.version import VERSION  # optional dependency (the `sim` extra): imported only when used

    asset_dir = metadrive_asset_dir()
    version_file = asset_dir / "version.txt"
    found = None
    if version_file.is_file():
        lines = version_file.read_text().splitlines()
        found = lines[0].replace(" ", "") if lines else ""
    return AssetStatus(
        asset_dir=asset_dir,
        expected_version=VERSION,
        found_version=found,
        texture_present=asset_dir.joinpath(*CHECKED_TEXTURE).is_file(),
        stub=(asset_dir / STUB_MARKER).is_file(),
    )


def ensure_offline_assets(quiet: bool = False) -> AssetStatus:
    """Make MetaDrive start without a download, creating the offline stub when needed.

    Real assets (right version, texture present) are left untouched. Otherwise the two files
    MetaDrive checks are created (``version.txt`` with the expected version, and an empty
    placeholder for the checked texture) plus :data:`STUB_MARKER`, and a warning is logged and
    printed: the stub supports state/BEV simulation (``use_render=False``) only.

    Args:
        quiet: do not print the warning to stderr (it is still logged).

    Returns:
        The :class:`AssetStatus` after the set-up (``ready`` is True).

    Raises:
        PermissionError: the package folder is not writable; the message names it.
    """
    global _STUB_WARNED
    status = asset_status()
    if status.ready:
        if status.stub and not quiet and not _STUB_WARNED:
            _STUB_WARNED = True
            _warn(f"MetaDrive assets at {status.asset_dir} are dsdrive's OFFLINE STUB (state/BEV simulation only).")
        return status
    d = status.asset_dir
    try:
        d.joinpath(*CHECKED_TEXTURE[:-1]).mkdir(parents=True, exist_ok=True)
        (d / "version.txt").write_text(status.expected_version + "\n")
        tex = d.joinpath(*CHECKED_TEXTURE)
        if not tex.exists():
            tex.write_bytes(b"")
        (d / STUB_MARKER).write_text(
            "Created by dsdrive.evaluation.closed_loop.metadrive_assets.ensure_offline_assets with no network: only the files\n"
            "MetaDrive checks before downloading exist. State/BEV simulation (use_render=False) works;\n"
            "3D rendering needs the real assets: python -m metadrive.pull_asset --update\n"
        )
    except PermissionError as e:
        raise PermissionError(f"cannot write the MetaDrive asset stub into {d}: {e}") from e
    msg = (
        f"WARNING: MetaDrive assets missing (found version {status.found_version!r}, texture present: "
        f"{status.texture_present}); created an OFFLINE STUB in {d} (version.txt + placeholder texture). "
        "State/BEV simulation only; for 3D rendering run: python -m metadrive.pull_asset --update"
    )
    if not quiet:
        _warn(msg)
    logger.warning(msg)
    return asset_status()


def _warn(msg: str) -> None:
    print(msg if msg.startswith("WARNING") else f"WARNING: {msg}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m dsdrive.evaluation.closed_loop.metadrive_assets``: check, and create the offline stub if needed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report; exit 1 when assets are not ready")
    args = ap.parse_args(argv)
    st = asset_status() if args.check else ensure_offline_assets()
    kind = "offline stub" if st.stub else "real assets"
    print(f"MetaDrive assets: {st.asset_dir} version={st.found_version} expected={st.expected_version} "
          f"ready={st.ready} ({kind if st.ready else 'missing'})")
    return 0 if st.ready else 1


if __name__ == "__main__":
    raise SystemExit(main())
