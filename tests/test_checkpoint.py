"""Checkpoints: round trip, atomic writes, and clear errors for truncated or foreign files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rnnrbm import RBM, GaussianBernoulliRBM
from rnnrbm.checkpoint import load_checkpoint, save_checkpoint
from rnnrbm.validation import CheckpointError, InputError


def _binary(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


@pytest.mark.parametrize("cls", [RBM, GaussianBernoulliRBM])
def test_save_load_round_trip_without_hyperparameters(tmp_path: Path, cls: type[RBM]) -> None:
    model = cls(7, 5, k=3, n_chains=11, seed=3)
    data = _binary(40, 7) if cls is RBM else torch.randn(40, 7)
    model.fit(data, epochs=2, batch_size=8, lr=0.01)
    path = model.save(tmp_path / "m.safetensors")
    loaded = RBM.load(path) if cls is RBM else GaussianBernoulliRBM.load(path)
    assert type(loaded) is cls
    assert loaded.config() == model.config()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert bool(loaded.chains.initialized)


def test_load_wrong_class_names_the_right_one(tmp_path: Path) -> None:
    path = RBM(3, 2).save(tmp_path / "b.safetensors")
    with pytest.raises(InputError, match=r"b\.safetensors.*GaussianBernoulliRBM.*RBM\.load"):
        GaussianBernoulliRBM.load(path)
    assert type(load_checkpoint(path).model) is RBM


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.safetensors.*existing file"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file_names_file_and_fix(tmp_path: Path) -> None:
    path = RBM(20, 10).save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors.*truncated or not a"):
        load_checkpoint(bad)


def test_text_file_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "notes.safetensors"
    bad.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.safetensors"):
        load_checkpoint(bad)


def test_foreign_safetensors_is_rejected(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors.*foreign safetensors"):
        load_checkpoint(foreign)


def test_failed_write_leaves_previous_checkpoint_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.safetensors"
    first = RBM(6, 4, seed=1)
    save_checkpoint(path, first)
    before = path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, RBM(6, 4, seed=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_write_killed_midway_leaves_previous_checkpoint(tmp_path: Path) -> None:
    """A process SIGKILLed while rewriting a large checkpoint in a loop never corrupts it."""
    path = tmp_path / "big.safetensors"
    script = textwrap.dedent(
        f"""
        import sys, torch
        from rnnrbm import RBM
        from rnnrbm.checkpoint import save_checkpoint
        m = RBM(2000, 2000, seed=0)
        save_checkpoint({str(path)!r}, m)
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            with torch.no_grad():
                m.frame.b_h.fill_(float(i))
            save_checkpoint({str(path)!r}, m)
        """
    )
    for delay in (0.05, 0.2, 0.45):
        with subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        model = load_checkpoint(path).model
        b_h = model.frame.b_h
        assert torch.all(b_h == b_h[0])  # one consistent version, never a mix
