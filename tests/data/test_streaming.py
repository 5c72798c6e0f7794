"""Streaming a prepared corpus (``data.streaming``): lazy splits, shard-local epochs, the shard
cache's bound, the ``data.stream`` setting, and ``rnnrbm train --data CORPUS`` streamed end to
end with exact resumption.

One corpus of 40 short synthetic pieces (6..22 frames) is prepared per module with 40-frame
shards, so it has a dozen shards; a spy on ``_load_shard`` counts every shard read from disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import chords, write_midi
from rnnrbm.checkpoint import load_checkpoint
from rnnrbm.cli import main
from rnnrbm.cli.train import _stream_lines
from rnnrbm.data import streaming
from rnnrbm.data.corpus import load_corpus, prepare_corpus
from rnnrbm.data.music_data import load_music_data
from rnnrbm.data.streaming import CorpusSplit, StreamingBatches, open_corpus
from rnnrbm.evaluation import evaluate
from rnnrbm.models.sequence import SequenceEpochs
from rnnrbm.music.midi import MidiReadOptions
from rnnrbm.recipes import Recipe, run
from rnnrbm.recipes.runner import _fingerprint, load_data
from rnnrbm.recipes.schema import setting
from rnnrbm.recipes.stages import ValidationMonitor
from rnnrbm.training import Callback, _Shard
from rnnrbm.validation import InputError

N_PIECES = 40
SHARD_FRAMES = 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("stream")
    midi = root / "midi"
    midi.mkdir()
    for i in range(N_PIECES):  # distinct contents: 3..11 beats (6..22 frames), rising roots
        write_midi(midi / f"p{i:02d}.mid", chords(3 + i % 9, 40 + i), key=i % 12)
    options = MidiReadOptions(transpose_to_c=True)
    report = prepare_corpus(midi, root / "corpus", options=options, shard_frames=SHARD_FRAMES)
    assert report.pieces == N_PIECES and report.shards >= 10
    return SimpleNamespace(out=root / "corpus", midi=midi, memory=load_corpus(root / "corpus"))


@pytest.fixture
def loads(monkeypatch) -> Counter:
    """Shard name → times read from disk (by any cache) during the test."""
    counts: Counter = Counter()
    real = streaming._load_shard

    def spy(folder, name):
        counts[name] += 1
        return real(folder, name)

    monkeypatch.setattr(streaming, "_load_shard", spy)
    return counts


def _items(sb: StreamingBatches) -> list[tuple[int, int, int]]:
    return list(zip(sb.pieces.tolist(), sb.starts.tolist(), sb.sizes.tolist(), strict=True))


def _same_batches(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------------------- lazy splits
def test_a_lazy_split_is_the_split_load_corpus_decodes_read_on_access(corpus, loads):
    ds = open_corpus(corpus.out, window=2)
    mem = corpus.memory
    assert ds.splits.keys() == mem.splits.keys()
    train = ds["train"]
    assert isinstance(train, CorpusSplit) and len(train) == len(mem["train"])
    assert train.lengths == [len(r) for r in mem["train"]]
    assert ds.n_frames("train") == mem.n_frames("train") == train.frames
    assert sum(loads.values()) == 0  # lengths, sizes, shards: the index alone
    assert np.array_equal(train[-1], mem["train"][-1])
    assert all(np.array_equal(x, y) for x, y in zip(train[2:5], mem["train"][2:5], strict=True))
    with pytest.raises(IndexError):
        train[len(train)]
    for split in mem.splits:
        got = list(ds[split])
        assert len(got) == len(mem[split])
        assert all(
            x.dtype == bool and np.array_equal(x, y) for x, y in zip(got, mem[split], strict=True)
        )
    assert train.cache.peak <= 2 and len(train.cache) <= 2
    assert "train" in repr(train) and f"{len(train.shards)} shards" in repr(train)
    assert np.array_equal(ds.frames("valid"), mem.frames("valid"))


def test_head_and_frame_sample_read_only_the_shards_they_need(corpus, loads):
    ds = open_corpus(corpus.out, window=2)
    valid, mem = ds["valid"], corpus.memory["valid"]
    head = valid.head(30)
    expected = ValidationMonitor(None, max_frames=30)._subset(mem)  # type: ignore[arg-type]
    assert len(head) == len(expected) < len(valid)
    assert all(np.array_equal(x, y) for x, y in zip(head, expected, strict=True))
    assert set(loads) == {valid.shard_of(i) for i in range(len(head))}

    loads.clear()
    train = ds["train"]
    train.cache.clear()  # one cache for every split of the corpus: valid's shards were held
    frames, info = train.frame_sample(max_frames=30, shards=3)
    assert len(frames) == info["frames"] <= 30 and frames.shape[1] == 88
    assert info["shards"] == train.sample_shards(3) and len(set(info["shards"])) == 3
    assert info["shards"][0] == train.shards[0] and info["of_frames"] == train.frames
    assert set(loads) == set(info["shards"]) and max(loads.values()) == 1
    parts = [  # each sampled shard's train pieces in index order, up to 30 // 3 frames
        np.concatenate([train[i] for i in range(len(train)) if train.shard_of(i) == s])[:10]
        for s in info["shards"]
    ]
    assert np.array_equal(frames, np.concatenate(parts))


# ------------------------------------------------------------------------------- epochs
@pytest.mark.parametrize(("max_len", "carry"), [(None, False), (5, False), (5, True)])
def test_an_epoch_has_every_item_once_in_bucketed_window_local_batches(corpus, max_len, carry):
    train, mem = open_corpus(corpus.out, window=3)["train"], corpus.memory["train"]
    sb = StreamingBatches(train, 4, seed=7, max_len=max_len, carry_state=carry)
    items = _items(sb)
    expected = {  # (piece, start) of every chunk of every piece
        (p, s) for p, r in enumerate(mem) for s in range(0, len(r), max_len or len(r))
    }
    assert {(p, s) for p, s, _ in items} == expected and len(items) == len(expected)
    window_of = {i: w for w, ids in enumerate(sb.windows) for i in ids.tolist()}
    for epoch in (0, 1):
        order = sb.order(epoch)
        assert len(order) == len(sb)
        ids = np.concatenate(order)
        assert sorted(ids.tolist()) == list(range(len(items)))  # every item once
        assert all(1 <= len(b) <= 4 for b in order)
        visited = [window_of[int(b[0])] for b in order]
        assert all(
            {window_of[int(i)] for i in b} == {w} for b, w in zip(order, visited, strict=True)
        )
        runs = [w for k, w in enumerate(visited) if k == 0 or visited[k - 1] != w]
        assert runs == sb.window_order(epoch)  # each window's batches in one run, in order
        for w in set(visited):  # bucketed: a window's batches hold disjoint length ranges
            spans = sorted(
                (int(sb.lengths[b].min()), int(sb.lengths[b].max()))
                for b, v in zip(order, visited, strict=True)
                if v == w
            )
            assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(spans))
        for b, out in zip(order, sb.batches(epoch), strict=True):
            batch, mask = out[0], out[1]
            for row, i in enumerate(b.tolist()):
                p, s, n = items[i]
                first = 0 if carry else s
                want = mem[p][first : s + n]
                assert np.array_equal(batch[row][mask[row]].numpy().astype(bool), want)
                if carry:  # the loss mask marks the chunk's frames, after its piece's prefix
                    assert out[2][row].nonzero().flatten().tolist() == list(range(s, s + n))


def test_epochs_are_a_pure_function_of_seed_and_epoch_in_any_process(corpus):
    def orders(seed: int, epochs=(0, 1, 2)) -> list[list[list[int]]]:
        sb = StreamingBatches(open_corpus(corpus.out, window=2)["train"], 3, seed=seed, max_len=4)
        return [[b.tolist() for b in sb.order(e)] for e in epochs]

    a, again = orders(0), orders(0)
    assert a == again and a[0] != a[1] != a[2] and orders(1) != a
    assert len({len(o) for o in a}) == 1  # len is the same every epoch
    code = (
        "import hashlib, json, sys; from rnnrbm.data.streaming import StreamingBatches, "
        "open_corpus; sb = StreamingBatches(open_corpus(sys.argv[1], window=2)['train'], 3, "
        "seed=0, max_len=4); o = [[b.tolist() for b in sb.order(e)] for e in (0, 1, 2)]; "
        "print(hashlib.sha256(json.dumps(o).encode()).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(corpus.out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.stdout.strip() == hashlib.sha256(json.dumps(a).encode()).hexdigest()


def test_a_resumed_epoch_is_the_tail_and_reads_only_the_windows_left(corpus, loads):
    train = open_corpus(corpus.out, window=2)["train"]
    sb = StreamingBatches(train, 4, seed=3, max_len=6)
    whole = list(sb.batches(1))
    assert len(whole) == len(sb) and sum(loads.values()) == len(train.shards)
    for k in (0, 1, len(sb) // 2, len(sb) - 1, len(sb)):
        train.cache.clear()
        loads.clear()
        assert _same_batches(list(sb.batches(1, k)), whole[k:])
        left = {train.shard_of(int(sb.pieces[i])) for b in sb.order(1)[k:] for i in b}
        assert set(loads) == left and all(v == 1 for v in loads.values())
    sb.load_state_dict({"seed": 3, "epoch": 1})
    assert _same_batches(list(iter(sb)), whole) and sb.state_dict() == {"seed": 3, "epoch": 2}


def test_two_data_parallel_ranks_partition_the_epoch(corpus, loads):
    train = open_corpus(corpus.out, window=2)["train"]
    sb = StreamingBatches(train, 3, seed=5, max_len=5)
    whole = list(sb.batches(4))
    shares = []
    for rank in (0, 1):
        train.cache.clear()
        loads.clear()
        shares.append(list(_Shard(SequenceEpochs(sb), rank, 2).epoch(4)))
        assert max(loads.values()) == 1  # a rank's share reads each shard once too
    n = len(sb) // 2
    assert len(shares[0]) == len(shares[1]) == n
    assert _same_batches(shares[0], whole[0 : 2 * n : 2])
    assert _same_batches(shares[1], whole[1 : 2 * n : 2])
    mid = list(_Shard(SequenceEpochs(sb), 1, 2).epoch(4, start=2))  # a rank resumed mid-epoch
    assert _same_batches(mid, shares[1][2:])


@pytest.mark.parametrize("window", [1, 3])
def test_the_shard_cache_never_holds_more_than_one_window(corpus, loads, window):
    train = open_corpus(corpus.out, window=window)["train"]
    sb = StreamingBatches(train, 4, seed=1)
    assert len(sb.windows) == -(-len(train.shards) // window)
    for epoch in (0, 1):
        loads.clear()
        train.cache.clear()  # else the last window of epoch 0 may still be held
        for _ in sb.batches(epoch):
            assert len(train.cache) <= window
        assert set(loads) == set(train.shards) and set(loads.values()) == {1}  # once each
    assert train.cache.peak <= window and train.cache.loads == 2 * len(train.shards)


# ------------------------------------------------------------------------------- settings
def test_the_stream_setting_and_when_a_corpus_is_streamed(corpus, monkeypatch):
    assert setting("data.stream").default == "auto"
    assert setting("data.stream_window").default == streaming.WINDOW_SHARDS
    assert (
        f"{streaming.STREAM_ABOVE_FRAMES // 10**6} million"
        in setting("data.stream").metadata["doc"]
    )
    assert f"{streaming.STREAM_VALID_FRAMES:,}" in setting("validation.frames").metadata["doc"]
    with pytest.raises(InputError, match=r"data\.stream: expected one of 'auto', 'on', 'off'"):
        Recipe.from_dict({"data": {"stream": "yes"}})
    with pytest.raises(InputError, match=r"data\.stream_window"):
        Recipe.from_dict({"data": {"stream_window": 0}})
    with pytest.raises(InputError, match=r"data\.stream: expected 'auto' or 'off'.*rbm"):
        Recipe.from_dict({"model": {"type": "rbm"}, "data": {"stream": "on"}})

    small = load_music_data(corpus.out)  # auto, far below the threshold: today's lists
    assert not small.streamed and all(type(v) is list for v in small.dataset.splits.values())
    assert "stream" not in small.describe()
    assert not load_music_data(corpus.out, stream="off").streamed
    on = load_music_data(corpus.out, stream="on", window=3)
    assert on.streamed and on.dataset["train"].window == 3
    assert on.describe()["splits"] == small.describe()["splits"]
    assert on.describe()["stream"]["window_shards"] == 3
    monkeypatch.setattr(streaming, "STREAM_ABOVE_FRAMES", corpus.memory.n_frames("train") - 1)
    assert load_music_data(corpus.out).streamed  # auto, above the threshold
    rbm = Recipe.from_dict({"model": {"type": "rbm"}, "data": {"source": str(corpus.out)}})
    assert not load_data(rbm).streamed  # a plain RBM trains on frames in memory
    with pytest.raises(InputError, match=r"data\.stream: expected a corpus folder.*Fix: prepare"):
        load_music_data(corpus.midi, stream="on")
    with pytest.raises(InputError, match=r"data\.stream"):
        load_music_data(corpus.out, stream="sometimes")


def test_data_parallel_ranks_compare_a_streamed_corpus_by_its_index(corpus, loads):
    data = load_music_data(corpus.out, stream="on")
    fingerprint = _fingerprint(Recipe(), data, None)
    train = data.dataset["train"]
    assert fingerprint["data.splits.train"] == train.fingerprint()
    assert f"{len(train)} pieces, {train.frames} frames, sha256 " in train.fingerprint()
    assert sum(loads.values()) == 0  # from the index: no shard decoded


def test_evaluation_of_a_streamed_corpus_decodes_its_split_alone(corpus, loads, music):
    model = music.tiny("rnn-nade")
    ds = open_corpus(corpus.out, window=2)
    streamed = evaluate(model, ds, "test", accuracy=False)
    assert set(loads) == set(ds["test"].shards)  # the train split is never read
    in_memory = evaluate(model, corpus.memory, "test", accuracy=False)
    untimed = [{k: v for k, v in r["nll"].items() if k != "seconds"} for r in (streamed, in_memory)]
    assert untimed[0] == untimed[1]


# ------------------------------------------------------------------------------- training
def _train(out: Path, corpus: Path, *more: str) -> list[str]:
    argv = ["train", "--model", "rnn-nade", "--data", str(corpus), "--out", str(out)]
    argv += ["--hidden", "4", "--recurrent", "4", "--max-len", "6", "--batch-size", "4"]
    argv += ["--pretrain-epochs", "1", "--rnn-pretrain-epochs", "1", "--valid-frames", "30"]
    return [*argv, "--set", "data.stream=on", "--set", "data.stream_window=2", "--json", *more]


def _json(capsys) -> dict:
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def test_train_streams_a_corpus_end_to_end_and_resumes_exactly(
    corpus, tmp_path, capsys, one_thread
):
    assert main(_train(tmp_path / "whole", corpus.out, "--epochs", "2")) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert "streaming" in err and "(data.stream=on)" in err and "2 shards at a time" in err
    stream = res["stream"]
    train = open_corpus(corpus.out, window=2)["train"]
    assert stream["epochs"]["shards"] == len(train.shards) and stream["epochs"]["windows"] > 1
    assert stream["epochs"]["window_shards"] == 2 == res["data"]["stream"]["window_shards"]
    fp, va = stream["frame_pretraining"], stream["validation"]
    assert fp["frames"] <= fp["max_frames"] and fp["of_frames"] == train.frames
    assert va["frames"] <= 30 == va["max_frames"] and va["pieces"] >= 1
    assert res["recipe_settings"]["data"]["stream"] == "on" and len(res["history"]) == 2
    assert all("valid_nll" in h for h in res["history"])
    lines = _stream_lines(stream)
    assert "windows of 2 shards" in lines[0] and "frame pretraining on a sample" in lines[1]
    assert f"({va['frames']} of {va['of_frames']} frames)" in lines[2]

    cut = tmp_path / "cut"
    assert main(_train(cut, corpus.out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(cut), "--resume", "--epochs", "2", "--json"]) == 0
    resumed = _json(capsys)
    assert resumed["stream"]["frame_pretraining"] is None  # not repeated on resume
    assert _untimed(resumed["history"]) == _untimed(res["history"])
    a, b = _weights(tmp_path / "whole" / "last.safetensors"), _weights(cut / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, state, loss, monitors) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt


def test_a_streamed_run_interrupted_mid_epoch_resumes_exactly(corpus, tmp_path, one_thread):
    recipe = Recipe.from_dict(
        {
            "data": {"source": str(corpus.out), "max_len": 6, "stream": "on", "stream_window": 3},
            "model": {"type": "rnn-nade", "hidden": 4, "recurrent": 4},
            "stages": {"frames": {"epochs": 0}, "sequence": {"epochs": 2, "batch_size": 4}},
            "validation": {"frames": 30},
        }
    )
    whole = run(recipe, tmp_path / "whole")
    assert whole.stream is not None and whole.stream["frame_pretraining"] is None
    steps = whole.stream["epochs"]["batches_per_epoch"]
    with pytest.raises(KeyboardInterrupt):
        run(recipe, tmp_path / "cut", callbacks=[_StopAt(steps + 3)])  # in epoch 2
    assert load_checkpoint(tmp_path / "cut" / "last.safetensors").train_state["batch"] == 3
    resumed = run(recipe, tmp_path / "cut", resume=True)
    assert resumed.history == whole.history
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
