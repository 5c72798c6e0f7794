"""Atomic writes: the target holds the old bytes or the whole new ones, never a partial file."""

from __future__ import annotations

import pytest

from rnnrbm.files import atomic_write, atomic_write_bytes


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "keep.mid"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mid"]


def test_atomic_write_bytes_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "x.json"
    assert atomic_write_bytes(target, b"first") == target
    assert atomic_write_bytes(str(target), b"second") == target
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temp file left
