"""Restricted unpickler: admits builtins containers/scalars and numpy, refuses every other global."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest

from dsdrive.data.safe_pickle import UnsafePickleError, load_pickle
from helpers_scenarionet import REAL_DIR, needs_real_data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip_of_admitted_types(tmp_path, protocol):
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([True, False]),
        "s": np.float64(2.5),
        "i": np.int64(7),
        "nested": [(1, 2.0, "x", b"y"), {3, 4}, frozenset({5}), None, complex(1, 2)],
        "dd": collections.defaultdict(int, {"k": 1}),
        "strings": np.array(["ab", "c"]),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    back = load_pickle(path)
    np.testing.assert_array_equal(back["a"], obj["a"])
    assert back["a"].dtype == np.float32 and back["s"] == 2.5 and back["i"] == 7
    assert back["nested"] == obj["nested"] and back["dd"] == {"k": 1} and back["dd"].default_factory is int
    assert back["strings"].tolist() == ["ab", "c"]


@pytest.mark.parametrize(
    "obj, name",
    [
        (collections.OrderedDict(a=1), "collections.OrderedDict"),
        (np.random.default_rng(0), "numpy.random"),
        (eval, "builtins.eval"),
    ],
)
def test_refuses_other_globals(tmp_path, obj, name):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"x": obj}))
    with pytest.raises(UnsafePickleError) as err:
        load_pickle(path)
    assert err.value.global_name.startswith(name) and str(path) in str(err.value)


def test_refuses_os_system_before_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match="'os.system'"):
        load_pickle(path)
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)})[:40])
    with pytest.raises(pickle.UnpicklingError, match="cut.pkl: not a readable pickle"):
        load_pickle(path)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_pickle(tmp_path / "nope.pkl")


@needs_real_data
def test_loads_every_real_scenario():
    for path in sorted(REAL_DIR.glob("*.pkl")):
        data = load_pickle(path)
        assert data["metadata"]["sdc_id"] in data["tracks"]
