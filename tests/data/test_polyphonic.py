"""Polyphonic benchmarks: sizes, bundled copy, original pickle, 1-gram baseline, validation."""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from rnnrbm.data import polyphonic as poly
from rnnrbm.data.polyphonic import (
    DATASETS,
    REFERENCE_SIZES,
    load_bundled_jsb,
    load_polyphonic,
    notes_to_roll,
)
from rnnrbm.validation import DataFormatError, InputError, InputTypeError

# Shared README table: (sequences, frames) per split.
README_TABLE = {
    "jsb": {"train": (229, 13_807), "valid": (76, 4_602), "test": (77, 4_725)},
    "nottingham": {"train": (694, 176_561), "valid": (173, 45_513), "test": (170, 44_463)},
    "musedata": {"train": (524, 245_202), "valid": (135, 82_755), "test": (124, 64_339)},
    "piano-midi": {"train": (87, 75_911), "valid": (12, 8_540), "test": (25, 19_036)},
}
# Boulanger-Lewandowski et al. (2012), Table 1, "Note 1-Gram" log-likelihood per frame.
PUBLISHED_ONE_GRAM = {"piano-midi": -11.05, "nottingham": -10.25, "musedata": -11.51, "jsb": -11.06}


@functools.cache
def load_cached(name: str, root: Path):
    """Each big dataset is parsed once per session (the tests only read it)."""
    return load_polyphonic(name, root=root)


def write_gz(path: Path, obj: object) -> Path:
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    return path


def good(**override: object) -> dict:
    data = {"train": [[[60, 64], [], [67]]], "valid": [[[21]]], "test": [[[108, 60]]]}
    data.update(override)
    return data


# ------------------------------------------------------------------------------- real datasets


@pytest.mark.parametrize("name", list(DATASETS))
def test_dataset_sizes_match_readme(shared_data: Path, name: str) -> None:
    ds = load_cached(name, shared_data)
    assert ds.name == name and Path(ds.source).parent == shared_data
    for split, (n_seq, n_frames) in README_TABLE[name].items():
        rolls = ds[split]
        assert len(rolls) == n_seq
        assert ds.n_frames(split) == n_frames
        assert all(r.dtype == bool and r.ndim == 2 and r.shape[1] == 88 for r in rolls)
        assert ds.frames(split).shape == (n_frames, 88)
    assert REFERENCE_SIZES[name] == README_TABLE[name]
    assert f"'{name}'" in repr(ds) and "train=" in repr(ds)


def one_gram_loglik(train: np.ndarray, test: np.ndarray, eps: float) -> float:
    """Mean over test frames of Σ_keys log Bernoulli(v | p), p = clamp(mean train frame, eps)."""
    p = np.clip(train.mean(axis=0, dtype=np.float64), eps, 1.0 - eps)
    ll = test @ np.log(p) + (1.0 - test) @ np.log1p(-p)
    return float(ll.mean())


@pytest.mark.parametrize("name", list(DATASETS))
def test_note_one_gram_reproduces_published_numbers(shared_data: Path, name: str) -> None:
    # Plain MLE gives p_i = 0 for keys never played in training; 3 of the 4 test sets play such
    # keys (Nottingham 8, MuseData 17, JSB 1 note events), so the MLE score is -inf there.
    # Clamping p to [1e-6, 1 - 1e-6] reproduces all four published numbers (any eps from 1e-12
    # to 1e-4 does, as does add-alpha smoothing for alpha in 0.01..2; eps = 1e-3 breaks JSB).
    ds = load_cached(name, shared_data)
    train = ds.frames("train").astype(np.float64)
    test = ds.frames("test").astype(np.float64)
    assert round(one_gram_loglik(train, test, 1e-6), 2) == PUBLISHED_ONE_GRAM[name]
    unseen = test[:, train.sum(axis=0) == 0].sum()
    if unseen:
        with np.errstate(divide="ignore", invalid="ignore"):
            assert not np.isfinite(one_gram_loglik(train, test, 0.0))
    # Random baseline: every key p = 0.5 → 88 ln(1/2) per frame, whatever the frame.
    random_ll = float(
        (test @ np.full(88, math.log(0.5)) + (1 - test) @ np.full(88, math.log(0.5))).mean()
    )
    assert round(random_ll, 2) == -61.00


def test_one_gram_clamp_too_large_breaks_jsb(shared_data: Path) -> None:
    ds = load_polyphonic("jsb", root=shared_data)
    train, test = ds.frames("train").astype(float), ds.frames("test").astype(float)
    assert round(one_gram_loglik(train, test, 1e-3), 2) != PUBLISHED_ONE_GRAM["jsb"]


def test_bundled_jsb_equals_shared(shared_data: Path) -> None:
    bundled, shared = load_bundled_jsb(), load_polyphonic("jsb", root=shared_data)
    assert bundled.name == "jsb" and "bundled" in bundled.source
    for split in ("train", "valid", "test"):
        assert len(bundled[split]) == len(shared[split])
        for a, b in zip(bundled[split], shared[split], strict=True):
            np.testing.assert_array_equal(a, b)
    assert (Path(poly.__file__).parent / "bundled" / "jsb_chorales.json.gz").read_bytes() == (
        shared_data / "jsb_chorales.json.gz"
    ).read_bytes()


def test_original_pickle_rolls_equal_json(shared_data: Path) -> None:
    pick = load_polyphonic(shared_data / "jsb_chorales_original.pickle")
    js = load_polyphonic(shared_data / "jsb_chorales.json.gz")
    assert pick.name == "jsb_chorales_original"
    for split in ("train", "valid", "test"):
        assert len(pick[split]) == len(js[split])
        for a, b in zip(pick[split], js[split], strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------- name lookup


def test_name_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, env = tmp_path / "root", tmp_path / "env"
    root.mkdir(), env.mkdir()
    write_gz(root / "nottingham.json.gz", good())
    (env / "nottingham.json").write_text(json.dumps(good(train=[[[22]], [[23]]])))
    monkeypatch.setenv("RNNRBM_DATA", str(env))
    assert len(load_polyphonic("nottingham", root=root)["train"]) == 1  # root wins
    ds = load_polyphonic("Nottingham")  # env var next; names are case-insensitive
    assert len(ds["train"]) == 2 and ds.source.endswith("nottingham.json")
    with pytest.raises(FileNotFoundError, match=r"searched \$RNNRBM_DATA.*musedata\.json\.gz"):
        load_polyphonic("musedata")


def test_name_falls_back_to_bundled_jsb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RNNRBM_DATA", raising=False)
    monkeypatch.setattr(poly, "_SHARED_DIR", tmp_path / "absent")
    ds = load_polyphonic("jsb")
    assert "bundled" in ds.source and len(ds["train"]) == 229
    with pytest.raises(FileNotFoundError, match=r"no data folder.*Fix: pass root="):
        load_polyphonic("piano-midi")


def test_missing_name_in_root_names_tried_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"jsb_chorales\.json\.gz.*load_bundled_jsb"):
        load_polyphonic("jsb", root=tmp_path)


def test_unknown_name_or_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'bach'.*Fix: check the spelling"):
        load_polyphonic("bach")
    with pytest.raises(FileNotFoundError, match=r"nope\.json\.gz"):
        load_polyphonic(tmp_path / "nope.json.gz")


def test_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("60,64")
    with pytest.raises(DataFormatError, match=r"x\.csv.*\.json\.gz"):
        load_polyphonic(tmp_path / "x.csv")


# ------------------------------------------------------------------------------- validation


def test_valid_small_file_rolls(tmp_path: Path) -> None:
    ds = load_polyphonic(write_gz(tmp_path / "ok.json.gz", good()))
    assert ds.name == "ok"
    roll = ds["train"][0]
    assert roll.shape == (3, 88)
    assert np.flatnonzero(roll[0]).tolist() == [60 - 21, 64 - 21]
    assert not roll[1].any() and np.flatnonzero(roll[2]).tolist() == [67 - 21]
    assert ds["valid"][0][0, 0] and ds["test"][0][0, 87]


def seq_with_frame(frame: object) -> dict:
    return good(valid=[[[60]], [[60], [62], frame]])  # split valid, sequence 1, frame 2


@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        ([60, 20], r"MIDI notes in 21\.\.108.*got note 20"),
        ([109], r"got note 109"),
        ([60.5], r"integer MIDI note numbers.*got float 60\.5"),
        ([60.0], r"got float 60\.0"),
        (["60"], r"got str '60'"),
        ([True], r"got bool True"),
        ([10**30], r"got note 1000000000000000000000000000000"),
        ([[60, 64]], r"got list \[60, 64\] \(nesting one level too deep\)"),
        (60, r"a frame as a list.*got int 60 \(nesting one level too shallow\)"),
        ({"n": 60}, r"got dict"),
    ],
)
def test_bad_frame_is_located(tmp_path: Path, frame: object, pattern: str) -> None:
    path = write_gz(tmp_path / "bad.json.gz", seq_with_frame(frame))
    where = re.escape(f"{path}: split 'valid', sequence 1, frame 2")
    with pytest.raises(DataFormatError, match=where + ".*" + pattern):
        load_polyphonic(path)


def test_first_problem_reported(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "b.json.gz", good(test=[[[60]], [[61], [5, 200]], [[300]]]))
    with pytest.raises(DataFormatError, match=r"split 'test', sequence 1, frame 1.*note 5"):
        load_polyphonic(path)


def test_empty_sequence(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "e.json.gz", good(train=[[[60]], []]))
    with pytest.raises(DataFormatError, match=r"split 'train', sequence 1: .*empty sequence"):
        load_polyphonic(path)


def test_sequence_not_a_list(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "n.json.gz", good(train=[[[60]], 7]))
    with pytest.raises(DataFormatError, match=r"sequence 1: expected a list of frames, got int"):
        load_polyphonic(path)


@pytest.mark.parametrize(("value", "pattern"), [({"a": 1}, "got dict"), ([], "empty list")])
def test_bad_split(tmp_path: Path, value: object, pattern: str) -> None:
    path = write_gz(tmp_path / "s.json.gz", good(test=value))
    with pytest.raises(DataFormatError, match=rf"split 'test': expected .*{pattern}"):
        load_polyphonic(path)


def test_missing_split_and_splits_argument(tmp_path: Path) -> None:
    data = good()
    del data["valid"]
    path = write_gz(tmp_path / "m.json.gz", data)
    with pytest.raises(DataFormatError, match=r"m\.json\.gz.*missing \['valid'\].*splits="):
        load_polyphonic(path)
    ds = load_polyphonic(path, splits=("train", "test"))
    assert list(ds.splits) == ["train", "test"]
    with pytest.raises(KeyError, match="valid"):
        ds["valid"]


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "l.json.gz", [[[60]]])
    with pytest.raises(DataFormatError, match=r"l\.json\.gz: expected a mapping.*got list"):
        load_polyphonic(path)


def test_corrupt_gzip_and_json(tmp_path: Path) -> None:
    garbage = tmp_path / "g.json.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"g\.json\.gz: expected a gzip file.*corrupt"):
        load_polyphonic(garbage)
    truncated = tmp_path / "t.json.gz"
    truncated.write_bytes(gzip.compress(json.dumps(good()).encode())[:-12])
    with pytest.raises(DataFormatError, match=r"t\.json\.gz: expected a gzip file"):
        load_polyphonic(truncated)
    bad_json = tmp_path / "j.json.gz"
    bad_json.write_bytes(gzip.compress(b'{"train": [[[60]]'))
    with pytest.raises(DataFormatError, match=r"j\.json\.gz: expected valid JSON.*line 1"):
        load_polyphonic(bad_json)
    plain = tmp_path / "p.json"
    plain.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFormatError, match=r"p\.json: expected"):
        load_polyphonic(plain)


def test_notes_to_roll() -> None:
    roll = notes_to_roll([[21, 108], [], [60, 60]])
    expected = np.zeros((3, 88), dtype=bool)
    expected[0, [0, 87]] = True
    expected[2, 39] = True
    np.testing.assert_array_equal(roll, expected)
    assert notes_to_roll([]).shape == (0, 88)
    with pytest.raises(InputError, match=r"MIDI notes in 21\.\.108.*range 60\.\.110"):
        notes_to_roll([[60], [110]])
    with pytest.raises(InputTypeError, match=r"frames: expected integer.*float64"):
        notes_to_roll([[60], [60.5]])


def test_bad_arguments() -> None:
    with pytest.raises(InputTypeError, match="name_or_path: expected a dataset name or a path"):
        load_polyphonic(3)
    with pytest.raises(InputError, match="splits: expected split names"):
        load_polyphonic("jsb", splits=())
