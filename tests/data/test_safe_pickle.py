"""The restricted unpickler: loads the original dataset pickle, refuses every other global."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rnnrbm.data.polyphonic import load_polyphonic
from rnnrbm.data.safe_pickle import safe_load, safe_loads
from rnnrbm.validation import DataFormatError


class SystemCall:
    """A hostile object: unpickling it with plain pickle would run ``os.system(cmd)``."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class EvalCall:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


class PopenCall:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self):
        return (subprocess.call, (self.argv,))


def hostile_payloads(marker: Path) -> dict[str, object]:
    return {
        "posix.system": SystemCall(f"touch {marker}"),
        "eval": EvalCall(f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": PopenCall(["touch", str(marker)]),
    }


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("kind", ["posix.system", "eval", "subprocess.call"])
def test_hostile_pickle_refused_and_not_run(tmp_path: Path, protocol: int, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = hostile_payloads(marker)[kind]
    # Nested inside an innocent-looking dataset, so the refusal must happen mid-structure.
    data = pickle.dumps({"train": [[(60, 64)], payload]}, protocol=protocol)
    path = tmp_path / "evil.pickle"
    path.write_bytes(data)
    name = kind.split(".")[-1]
    with pytest.raises(
        DataFormatError, match=rf"refused to load global '[\w.]*{name}' from .*evil"
    ):
        load_polyphonic(path)
    with pytest.raises(DataFormatError, match="not a plain dataset pickle"):
        safe_load(path)
    assert not marker.exists()


def test_handcrafted_os_system_global(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(DataFormatError, match=r"refused to load global 'os\.system' from x\.pkl"):
        safe_loads(data, source="x.pkl")
    assert not marker.exists()


@pytest.mark.parametrize(
    "glob",
    [
        "builtins\ngetattr",
        "__builtin__\neval",
        "numpy\nload",
        "numpy.testing._private.utils\nrunstring",
        "numpy.core.multiarray\n_reconstruct",
        "torch\nload",
    ],
)
def test_other_globals_refused(glob: str) -> None:
    module, name = glob.split("\n")
    with pytest.raises(DataFormatError, match=rf"refused to load global '{module}\.{name}'"):
        safe_loads(f"c{glob}\n.".encode(), source="f.pickle")


def test_numpy_array_refused() -> None:
    # Deliberate: dataset pickles hold scalars only; ndarray reconstruction is not admitted.
    data = pickle.dumps({"train": [[np.array([60, 64])]]}, protocol=2)
    with pytest.raises(DataFormatError, match=r"refused to load global 'numpy\._core\.multiarray"):
        safe_loads(data)


@pytest.mark.parametrize("module", ["numpy._core.multiarray", "numpy.core.multiarray"])
@pytest.mark.parametrize("protocol", [0, 2, 3])
def test_numpy_scalars_become_ints(module: str, protocol: int) -> None:
    obj = {"train": [[(np.int64(60), np.int32(64)), ()]], "valid": [[(np.uint8(21),)]]}
    data = pickle.dumps(obj, protocol=protocol)
    if module == "numpy.core.multiarray":  # what numpy 1.x wrote; must load without importing it
        # protocols ≤ 3 name globals as text lines (no length prefix), so this edit is safe
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    out = safe_loads(data)
    assert out == {"train": [[(60, 64), ()]], "valid": [[(21,)]]}
    assert all(type(n) is int for n in out["train"][0][0])


def test_float_scalar_reaches_note_validation(tmp_path: Path) -> None:
    path = tmp_path / "f.pickle"
    path.write_bytes(pickle.dumps({"train": [[(np.float64(60.5),)]]}, protocol=2))
    with pytest.raises(DataFormatError, match=r"split 'train', sequence 0, frame 0.*float 60\.5"):
        load_polyphonic(path, splits=("train",))


def test_non_numeric_scalar_refused() -> None:
    data = pickle.dumps(np.str_("x"), protocol=2)
    with pytest.raises(DataFormatError, match=r"numpy scalar in <bytes>: .*dtype"):
        safe_loads(data)


@pytest.mark.parametrize("data", [b"", b"garbage", pickle.dumps({"train": [1, 2, 3]})[:-5]])
def test_corrupt_pickle(data: bytes) -> None:
    with pytest.raises(DataFormatError, match=r"pickle file c\.pkl: .*corrupt or truncated"):
        safe_loads(data, source="c.pkl")


def test_real_original_pickle_equals_json_exactly(shared_data: Path) -> None:
    raw = safe_load(shared_data / "jsb_chorales_original.pickle")
    with gzip.open(shared_data / "jsb_chorales.json.gz", "rt") as fh:
        ref = json.load(fh)
    assert sorted(raw) == sorted(ref) == ["test", "train", "valid"]
    for split in ref:
        assert len(raw[split]) == len(ref[split])
        for seq_p, seq_j in zip(raw[split], ref[split], strict=True):
            assert [list(f) for f in seq_p] == seq_j  # every frame, same notes, same order
            assert all(type(n) is int for f in seq_p for n in f)
