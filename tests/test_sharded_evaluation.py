"""Evaluation that shards without changing its answer: random streams keyed by (seed, piece, block).

A frame's forward-AIS, RAISE and accuracy draws come from its block's own generators, and every
product over a block's rows is computed on the block alone, so the figures are bit-identical
whatever the number of blocks per call and the number of ranks that share the blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import tiny_music_model
from rnnrbm.checkpoint import save_checkpoint
from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.evaluation import blocks as blocks_module
from rnnrbm.evaluation import evaluate, frame_accuracy, frame_log_probs
from rnnrbm.evaluation.blocks import Block, blocks_of, frames_per_block, stream_seed

LENGTHS = (7, 3, 12, 1, 9)


def _rolls(seed: int = 0, n_keys: int = 88) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((T, n_keys)) < 0.06 for T in LENGTHS]


def test_blocks_cut_each_piece_and_cover_every_frame_once() -> None:
    blocks = blocks_of([5, 2, 0, 3], 2)
    assert blocks == [
        Block(0, 0, 0, 2), Block(0, 1, 2, 4), Block(0, 2, 4, 5),
        Block(1, 0, 5, 7), Block(3, 0, 7, 9), Block(3, 1, 9, 10),
    ]  # fmt: skip
    assert frames_per_block(100) == 5 and frames_per_block(10) == 51 and frames_per_block(999) == 1


def test_stream_seeds_depend_on_seed_stream_piece_and_block_only() -> None:
    b = Block(3, 2, 40, 45)
    same_key_elsewhere = Block(3, 2, 0, 5)  # rows differ (another rank's stacking): same key
    assert stream_seed(0, "ais", b) == stream_seed(0, "ais", same_key_elsewhere)
    seeds = {
        stream_seed(s, stream, Block(p, i, 0, 1))
        for s in (0, 1)
        for stream in ("base", "ais", "raise", "accuracy")
        for p in (0, 1)
        for i in (0, 1)
    }
    assert len(seeds) == 32 and all(0 <= x < 2**63 for x in seeds)


@pytest.mark.parametrize("method", ["ais", "raise"])
def test_log_probs_do_not_depend_on_blocks_per_call(method: str) -> None:
    model = tiny_music_model("rnn-rbm")
    rolls = _rolls()

    def run(per_call: int | None) -> Any:
        return frame_log_probs(
            model, rolls, method=method, ais_runs=64, ais_betas=20, seed=3,
            blocks_per_call=per_call,
        )  # fmt: skip

    ref = run(None)  # 8 frames per block: 7 blocks, all in one call
    assert len(blocks_of(LENGTHS, frames_per_block(64))) == 7
    for per_call in (1, 3):
        other = run(per_call)
        assert torch.equal(other.value, ref.value) and torch.equal(other.se, ref.se)
        assert torch.equal(other.value_half_runs, ref.value_half_runs)  # type: ignore[arg-type]
    assert not torch.equal(run(None).value, frame_log_probs(
        model, rolls, method=method, ais_runs=64, ais_betas=20, seed=4).value)  # fmt: skip


def _as_ranks(monkeypatch: pytest.MonkeyPatch, world: int, compute: Any) -> list[Any]:
    """Run ``compute()`` as ``world`` ranks at once (threads), with a thread collective standing
    in for ``all_gather_object``; returns every rank's result."""
    local = threading.local()
    slots: list[Any] = [None] * world
    barrier = threading.Barrier(world)

    def gather(obj: Any) -> list[Any]:
        slots[local.rank] = obj
        barrier.wait()
        out = list(slots)
        barrier.wait()  # nobody overwrites a slot before every rank has read them all
        return out

    monkeypatch.setattr(blocks_module.distributed, "world_size", lambda: world)
    monkeypatch.setattr(blocks_module.distributed, "rank", lambda: local.rank)
    monkeypatch.setattr(blocks_module.distributed, "all_gather_objects", gather)
    results: list[Any] = [None] * world

    def rank_main(r: int) -> None:
        local.rank = r
        results[r] = compute()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    return results


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_blocks_and_agree_with_one_process(
    monkeypatch: pytest.MonkeyPatch, world: int
) -> None:
    model = tiny_music_model("rnn-rbm")
    rolls = _rolls(1)
    ds = PolyphonicDataset("toy", "memory", {"train": rolls, "test": rolls})
    settings = dict(method="ais", ais_runs=16, ais_betas=10, samples=3, gibbs_steps=2, seed=5)

    def figures() -> dict[str, Any]:
        out = evaluate(model, ds, **settings)  # type: ignore[arg-type]
        for key in ("nll", "nll_conservative", "accuracy"):
            out[key].pop("seconds")
        return out

    one = figures()
    assert one["nll"]["estimator"].startswith("ais(") and one["nll_conservative"] is not None
    assert _as_ranks(monkeypatch, world, figures) == [one] * world


def test_accuracy_is_keyed_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_music_model("rnn-nade")
    rolls = _rolls(2)
    one = frame_accuracy(model, rolls, samples=5, seed=1)
    for two in _as_ranks(monkeypatch, 2, lambda: frame_accuracy(model, rolls, samples=5, seed=1)):
        assert (one.accuracy, one.se, one.n_frames) == (two.accuracy, two.se, two.n_frames)


def _torchrun(*args: str, nproc: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "rnnrbm", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_two_ranks_evaluate_exactly_as_one(tmp_path: Path) -> None:
    """The real thing: two gloo ranks under torchrun print the single process's figures."""
    rolls = _rolls(4)
    data = tmp_path / "toy.json"
    split = [[(21 + np.flatnonzero(f)).tolist() for f in r] for r in rolls]
    data.write_text(json.dumps({"train": split, "valid": split, "test": split}))
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", tiny_music_model("rnn-rbm"))
    args = ["evaluate", str(ckpt), "--data", str(data), "--method", "ais", "--ais-runs", "16"]
    args += ["--ais-betas", "10", "--accuracy-samples", "3", "--gibbs-steps", "2", "--json"]
    results = []
    for nproc in (1, 2):
        res = _torchrun(*args, nproc=nproc)
        assert res.returncode == 0, res.stderr[-2000:]
        lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1  # rank 0 alone prints
        out = json.loads(lines[0])
        assert out["ranks"] == nproc
        results.append(out)
    for key in ("nll", "nll_conservative", "accuracy"):
        a, b = ({k: v for k, v in r[key].items() if k != "seconds"} for r in results)
        assert a == b
