"""Restricted unpickling of data files: builtins containers/scalars and numpy arrays only.

Unpickling runs code: a pickle may name any importable callable (``os.system``) and have it
called on load. ScenarioNet scenarios and nuScenes info files are plain dicts of lists, scalars
and numpy arrays, so :func:`load_pickle` admits exactly the globals those need (the approach of
the Python docs' "Restricting Globals" recipe) and refuses everything else with
:class:`UnsafePickleError` naming the file and the global.

Admitted globals:

* ``builtins``: the container and scalar types (dict, list, tuple, set, frozenset, int, float,
  complex, bool, str, bytes, bytearray) - never ``eval``, ``getattr``, ``__import__`` ...;
* ``_codecs.encode`` (protocol-2 pickles written by Python 3 store ``bytes`` through it);
* ``collections.defaultdict`` (ScenarioNet's ``number_summary`` holds ``defaultdict(int)``; its
  default factory can only be one of the admitted types);
* numpy's array, dtype and scalar reconstructors as numpy 1.26 (``numpy.core``) and numpy 2
  (``numpy._core``) write them: ``multiarray._reconstruct``, ``multiarray.scalar``,
  ``numeric._frombuffer`` (protocol 5), ``numpy.ndarray``, ``numpy.dtype``.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import collections
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes", "bytearray")
_NUMPY_INTERNALS = {
    "multiarray": ("_reconstruct", "scalar"),
    "numeric": ("_frombuffer",),
}


def _numpy_internal(submodule: str, name: str) -> Any:
    """Resolve a numpy internal reconstructor under numpy 1.x (``numpy.core``) or 2.x (``numpy._core``)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"numpy has no {submodule}.{name}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {("builtins", n): getattr(builtins, n) for n in _BUILTINS}
    allowed[("_codecs", "encode")] = codecs.encode
    allowed[("collections", "defaultdict")] = collections.defaultdict
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for package in ("numpy.core", "numpy._core"):
        for submodule, names in _NUMPY_INTERNALS.items():
            for name in names:
                allowed[(f"{package}.{submodule}", name)] = (submodule, name)  # resolved lazily
    return allowed


ALLOWED_GLOBALS = _allowed_globals()
"""(module, name) -> object (or a lazily resolved numpy internal) that :func:`load_pickle` admits."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle references a global outside :data:`ALLOWED_GLOBALS`.

    Attributes:
        path: the file being read.
        global_name: the refused global as ``module.name``.
    """

    def __init__(self, path: str | Path, global_name: str):
        self.path = str(path)
        self.global_name = global_name
        super().__init__(
            f"{path}: refusing to unpickle global {global_name!r}: only builtin containers/scalars, "
            "collections.defaultdict and numpy arrays/dtypes/scalars are allowed "
            "(dsdrive.data.safe_pickle). Convert the file to plain dicts/lists/numpy arrays, "
            "or load it yourself if you trust it."
        )


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str | Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle hook
        key = (module, name)
        # protocol <= 2 pickles use Python 2 names (``__builtin__.long``); map them as pickle does
        key = _compat_pickle.NAME_MAPPING.get(key, (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        target = ALLOWED_GLOBALS.get(key)
        if target is None:
            raise UnsafePickleError(self._path, f"{module}.{name}")
        if isinstance(target, tuple):
            return _numpy_internal(*target)
        return target


def load_pickle(path: str | Path) -> Any:
    """Load a pickle file admitting only builtins containers/scalars and numpy arrays.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object (dicts, lists, tuples, sets, scalars, numpy arrays).

    Raises:
        FileNotFoundError: ``path`` does not exist (naming it).
        UnsafePickleError: the pickle references another global (naming file and ``module.name``).
        pickle.UnpicklingError: the file is truncated or not a pickle (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
