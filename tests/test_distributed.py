"""Data-parallel training under torchrun (gloo, CPU): the real launcher on two ranks, a killed
rank restarted and resumed exactly, ranks kept in step, mismatched ranks refused; the sharding
and the one-process identities in-process.

Runs use a tiny RNN-RBM (24 hidden units: too many to enumerate, so the validation NLL is a
cheap AIS, whose blocks the ranks share; 4 recurrent units) on the first 16 / 4 / 4 chorales of
the bundled JSB, one thread per rank. Each launch costs a few seconds of interpreter and
process-group start-up, so the launches are few and shared by the tests that read them.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rnnrbm import distributed
from rnnrbm.checkpoint import read_meta, save_checkpoint
from rnnrbm.cli import main
from rnnrbm.data.batching import SequenceBatches
from rnnrbm.data.polyphonic import load_polyphonic
from rnnrbm.models import RBM
from rnnrbm.models.sequence import SequenceEpochs
from rnnrbm.training import RowBatches, TrainConfig, TrainState, _Shard, fit
from rnnrbm.validation import InputError

EPOCHS = 16  # long enough for the restart test to kill a rank mid-run
RECIPE = """\
name = "ddp-tiny"
seed = 0
device = "cpu"
threads = 1

[model]
type = "{model}"
hidden = 24
recurrent = 4
k = 1

[data]
source = "{source}"

[stages.frames]
epochs = 1

[stages.sequence]
epochs = {epochs}
batch_size = {batch}
lr = 3e-3

[validation]
every = {every}
ais_runs = 4
ais_betas = 50
"""


def write_recipe(path: Path, source: Path, *, model: str = "rnn-rbm", epochs: int = EPOCHS,
                 batch: int = 2, every: int = 1) -> Path:  # fmt: skip
    text = RECIPE.format(model=model, source=source, epochs=epochs, batch=batch, every=every)
    path.write_text(text)
    return path


def torchrun_cmd(*args: object, max_restarts: int = 0) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--max-restarts", str(max_restarts), *map(str, args),
    ]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(*args: object, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = torchrun_cmd(*args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def one_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout  # rank 0 alone prints: one JSON object
    return json.loads(lines[0])


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """The keys whose tensors differ (or that one side lacks)."""
    keys = a.keys() | b.keys()
    return sorted(k for k in keys if k not in a or k not in b or not torch.equal(a[k], b[k]))


@pytest.fixture(scope="module")
def jsb_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 16 / 4 / 4 chorales of the bundled JSB as a .json.gz of MIDI note lists."""
    bundled = resources.files("rnnrbm.data").joinpath("bundled", "jsb_chorales.json.gz")
    raw = json.loads(gzip.decompress(bundled.read_bytes()))
    subset = {"train": raw["train"][:16], "valid": raw["valid"][:4], "test": raw["test"][:4]}
    path = tmp_path_factory.mktemp("data") / "jsb16.json.gz"
    path.write_bytes(gzip.compress(json.dumps(subset).encode()))
    return path


# The CLI (what `-m rnnrbm` runs), then this rank's gloo threads, if any, as one JSON line on
# stderr: the shared run also shows that the group is gone before the interpreter exits.
GROUP_THREADS = """\
import json, os, sys
from rnnrbm.cli import main

code = main(sys.argv[1:])
tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]
print(json.dumps({"rank": os.environ["RANK"], "gloo": [n for n in names if "gloo" in n]}),
      file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, jsb_subset: Path) -> SimpleNamespace:
    """One uninterrupted 2-rank run of the CLI (the reference of the restart test)."""
    root = tmp_path_factory.mktemp("ddp")
    recipe = write_recipe(root / "tiny.toml", jsb_subset)
    out = root / "run"
    (root / "threads.py").write_text(GROUP_THREADS)
    res = torchrun(root / "threads.py", "train", "--recipe", recipe, "--out", out, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    return SimpleNamespace(root=root, recipe=recipe, out=out, result=res)


# ----------------------------------------------------------------------------- torchrun
def test_torchrun_trains_one_checkpoint_that_evaluate_reads(two_ranks, capsys):
    info = one_json(two_ranks.result.stdout)
    assert info["epochs"] == EPOCHS and [h["epoch"] for h in info["history"]] == list(
        map(float, range(1, EPOCHS + 1))
    )
    # 16 pieces in batches of 2: 8 batches, 4 per rank per epoch (the global batch is 4).
    assert info["steps"] == 4 * EPOCHS
    assert all(
        np.isfinite(h["valid_nll"]) and np.isfinite(h["train_loss"]) for h in info["history"]
    )
    assert "frames" in info["timings_s"]  # frame pretraining ran (data-parallel too)
    out = two_ranks.out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.safetensors", "curves.png", "last.safetensors", "recipe.toml"]
    meta = read_meta(out / "last.safetensors")
    assert meta["extra"] == {"world_size": 2} and meta["train_state"]["epoch"] == EPOCHS
    rng = {k for k in load_file(out / "last.safetensors") if k.startswith("rng/")}
    assert rng == {"rng/sampler", "rng/rank1/sampler"}  # RNN-RBM: no per-rank buffers
    cheap = ["--ais-runs", "4", "--ais-betas", "50", "--no-conservative", "--accuracy-samples", "0"]
    assert main(["evaluate", str(out / "last.safetensors"), *cheap, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nll"]["estimator"].startswith("ais") and report["nll"]["n_frames"] > 0
    assert np.isfinite(report["nll"]["nll"])


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _rank_of(pid: int) -> int | None:
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"RANK="):
            return int(entry[5:])
    return None


def _epoch_of(last: Path) -> int:
    try:
        return int(read_meta(last)["train_state"]["epoch"])
    except Exception:  # replaced while read: try again
        return 0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds workers through /proc")
def test_a_killed_rank_restarts_the_group_which_resumes_exactly(two_ranks, tmp_path):
    out = tmp_path / "run"
    cmd = torchrun_cmd(
        "-m", "rnnrbm", "train", "--recipe", two_ranks.recipe, "--out", out,
        "--resume-if-exists", "--json", max_restarts=1,
    )  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "last.safetensors").is_file() and _epoch_of(out / "last.safetensors")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.01)
        victim = next(pid for pid in _children(proc.pid) if _rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "exitcode: -9" in stderr and "local_rank: 1" in stderr  # the agent saw the kill
    info = one_json(stdout)
    assert info["epochs"] == EPOCHS and len(info["history"]) == EPOCHS
    assert "frames" not in info["timings_s"]  # the restarted group resumed: no pretraining
    # Every rank's sampling state was in the checkpoint: the restarted run is the uninterrupted
    # one, bit for bit (weights, optimiser state, both ranks' generators).
    whole = load_file(two_ranks.out / "last.safetensors")
    assert tensors_equal(whole, load_file(out / "last.safetensors")) == []


WRAPPER = """\
import os, sys
from safetensors.torch import save_file
from rnnrbm import distributed
from rnnrbm.recipes import run

result = run(sys.argv[1], sys.argv[2])
state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
save_file(state, os.path.join(sys.argv[3], f"rank{os.environ['RANK']}.safetensors"))
distributed.shutdown()
"""


def test_ranks_keep_identical_parameters_and_their_own_chains(tmp_path, jsb_subset):
    """A plain RBM through the library (``recipes.run`` on each rank): no validation, so each
    rank's final model is its last step's; each rank dumps it (test-only wrapper)."""
    recipe = write_recipe(tmp_path / "rbm.toml", jsb_subset, model="rbm", epochs=3, batch=100,
                          every=10)  # fmt: skip
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    out = tmp_path / "run"
    res = torchrun(tmp_path / "wrapper.py", recipe, out, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    params = ["frame.W", "frame.b_v", "frame.b_h", "base_visible_bias"]
    assert tensors_equal({k: rank0[k] for k in params}, {k: rank1[k] for k in params}) == []
    assert not torch.equal(rank0["chains.state"], rank1["chains.state"])  # own PCD chains
    saved = load_file(out / "last.safetensors")
    weights = {k: v for k, v in saved.items() if k.startswith("model/")}
    assert tensors_equal({f"model/{k}": v for k, v in rank0.items()}, weights) == []
    assert torch.equal(saved["rng/rank1/buffer/chains.state"], rank1["chains.state"])
    # Frames in batches of 100, the last one short; each rank takes half, an odd one dropped.
    frames = sum(len(r) for r in load_polyphonic(jsb_subset)["train"])
    steps = -(-frames // 100) // 2
    assert read_meta(out / "last.safetensors")["train_state"]["step"] == steps * 3


MISMATCH = """\
import os, sys
from rnnrbm.cli import main

extra = ["--set", "seed=1"] if os.environ["RANK"] == "1" else []
sys.exit(main(sys.argv[1:] + extra))
"""


def test_ranks_with_different_settings_fail_fast_naming_the_field(tmp_path, jsb_subset):
    recipe = write_recipe(tmp_path / "tiny.toml", jsb_subset)
    (tmp_path / "mismatch.py").write_text(MISMATCH)
    out = tmp_path / "run"
    res = torchrun(tmp_path / "mismatch.py", "train", "--recipe", recipe, "--out", out, "--json")
    assert res.returncode != 0
    assert (
        "rnnrbm train: error: data-parallel run: seed: expected 0 on every rank (rank 0's "
        "value), got 1 on rank 1" in res.stderr
    ), res.stderr[-3000:]
    assert not out.exists()  # refused before the first file


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc/self/task")
def test_the_cli_frees_the_group_and_its_threads_before_the_interpreter_exits(two_ranks):
    """After ``train`` returns, no gloo thread is left on any rank. A group that outlives
    ``destroy_process_group`` keeps its worker threads into interpreter finalisation, where one
    that frees a finished collective's tensors aborts the rank (SIGABRT) now and then."""
    res = two_ranks.result
    assert res.returncode == 0, res.stderr[-3000:]
    reports = [json.loads(ln) for ln in res.stderr.splitlines() if ln.startswith('{"rank"')]
    assert sorted(r["rank"] for r in reports) == ["0", "1"], res.stderr[-3000:]
    assert [r["gloo"] for r in reports] == [[], []]


# ----------------------------------------------------------------------------- in-process
def test_resume_if_exists_starts_a_run_then_continues_it(tmp_path, jsb_subset, capsys):
    recipe = write_recipe(tmp_path / "tiny.toml", jsb_subset, epochs=1)
    flags = ["train", "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--json"]
    threads = torch.get_num_threads()
    try:
        assert main([*flags, "--resume-if-exists"]) == 0
        assert one_json(capsys.readouterr().out)["epochs"] == 1
        assert main([*flags, "--resume-if-exists", "--epochs", "2"]) == 0
        info = one_json(capsys.readouterr().out)
        assert info["epochs"] == 2 and "frames" not in info["timings_s"]  # continued
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(SystemExit, match="2"):  # argparse: one or the other
        main([*flags, "--resume", "--resume-if-exists"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_mid_epoch_checkpoint_resumes_only_with_as_many_ranks(tmp_path):
    model = RBM(6, 3, seed=0)
    state = asdict(TrainState(epoch=1, batch=2, step=5))
    ck = save_checkpoint(tmp_path / "mid.safetensors", model, train_state=state,
                         extra={"world_size": 2})  # fmt: skip
    rows = RowBatches(torch.zeros(8, 6), 2)
    with pytest.raises(InputError, match=r"expected 2 process\(es\).*--nproc_per_node 2"):
        fit(model, rows, config=TrainConfig(epochs=2), resume=ck)
    state["batch"] = 0  # at an epoch boundary any number of ranks resumes
    ck = save_checkpoint(ck, model, train_state=state, extra={"world_size": 2})
    assert fit(model, rows, config=TrainConfig(epochs=2), resume=ck).state.epoch == 2


def test_shards_are_disjoint_equal_and_resume_mid_epoch():
    data = torch.arange(23.0)[:, None]  # 23 rows in batches of 2: 12 batches, the last short
    rows = RowBatches(data, 2, seed=3)
    every = [b[:, 0].tolist() for b in rows.epoch(5)]
    for world in (2, 3, 5):
        shards = [_Shard(rows, r, world) for r in range(world)]
        assert {len(s) for s in shards} == {12 // world}  # same steps on every rank
        taken = [[b[:, 0].tolist() for b in s.epoch(5)] for s in shards]
        assert [b for r in range(world) for b in taken[r]] == [
            every[i] for r in range(world) for i in range(r, 12 // world * world, world)
        ]
        assert [b[:, 0].tolist() for b in shards[1].epoch(5, start=1)] == taken[1][1:]

    class Generic:  # a Batches without ``take``: the shard walks the epoch and filters
        def __len__(self) -> int:
            return len(rows)

        def epoch(self, epoch: int, start: int = 0):  # type: ignore[no-untyped-def]
            return rows.epoch(epoch, start)

    generic = [b[:, 0].tolist() for b in _Shard(Generic(), 1, 3).epoch(5, start=1)]
    assert generic == [b[:, 0].tolist() for b in _Shard(rows, 1, 3).epoch(5, start=1)]


def test_sequence_batches_take_yields_the_batches_at_those_positions():
    rng = np.random.default_rng(0)
    rolls = [rng.random((int(t), 5)) < 0.3 for t in rng.integers(2, 9, 11)]
    loader = SequenceBatches(rolls, 3, seed=1, sort_by_length=True)
    every = list(loader.batches(2))
    want = [every[3], every[0], every[2]]

    class BatchesOnly:  # a source without ``take``: SequenceEpochs replays one batch per position
        def __len__(self) -> int:
            return len(loader)

        def batches(self, epoch: int, start: int = 0):  # type: ignore[no-untyped-def]
            return loader.batches(epoch, start)

    for source in (loader, SequenceEpochs(loader), SequenceEpochs(BatchesOnly())):
        got = list(source.take(2, [3, 0, 2]))
        assert len(got) == 3
        for a, b in zip(got, want, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_one_process_collectives_are_identities():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    t = torch.ones(3)
    distributed.all_reduce_sum_([t])
    distributed.broadcast_([t])
    assert torch.equal(t, torch.ones(3))
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.first_mismatch({"seed": 0}) is None
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
    distributed.shutdown()  # nothing to leave
