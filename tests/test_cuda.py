"""Every path on a CUDA device: training (CD, PCD, exact NADE), AIS and RAISE, frame accuracy,
generation, sharded evaluation and data-parallel training with NCCL under torchrun.

Skipped without a device (the CPU suite covers the same code); each test checks that the work
stayed on the GPU and that its answer agrees with the CPU's or with the exact value.
``RNNRBM_TEST_DEVICE=cpu`` runs the same file on the CPU (a dry run of the tests themselves).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import tiny_music_model
from rnnrbm.checkpoint import load_checkpoint, save_checkpoint
from rnnrbm.data.music_data import MusicData
from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.evaluation import evaluate, frame_log_probs, sequence_nll
from rnnrbm.generation import generate_rolls
from rnnrbm.models import RBM
from rnnrbm.models.sequence import build_sequence_model
from rnnrbm.recipes import Recipe, run
from toy_sequences import toy_dataset

DEVICE = os.environ.get("RNNRBM_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]


def _on_device(t: torch.Tensor) -> bool:
    return t.device.type == DEVICE


def _recipe(model: str, **more: Any) -> Recipe:
    return Recipe.from_dict(
        {
            "device": DEVICE,
            "data": {"source": "memory"},
            "model": {"type": model, "hidden": 6, "recurrent": 5, **more},
            "stages": {"frames": {"epochs": 1}, "sequence": {"epochs": 2, "batch_size": 4}},
            "validation": {"ais_runs": 4, "ais_betas": 10},
        }
    )


@pytest.mark.parametrize("model", ["rnn-rbm", "rtrbm", "lstm-rtrbm", "rnn-nade", "rbm"])
def test_every_model_trains_on_cuda_and_its_checkpoint_loads(model: str, tmp_path: Path) -> None:
    result = run(_recipe(model), tmp_path, data=MusicData(toy_dataset(), "benchmark", 1, True))
    params = list(result.model.parameters())
    assert all(_on_device(p) for p in params) and all(bool(torch.isfinite(p).all()) for p in params)
    assert result.last is not None and result.epochs == 2
    assert all(p.device.type == "cpu" for p in load_checkpoint(result.last).model.parameters())


def test_persistent_chains_stay_on_the_device() -> None:
    rbm = RBM(12, 5, k=1, method="pcd", n_chains=16, seed=0, device=DEVICE)
    x = (torch.rand(64, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    rbm.fit(x, epochs=2, batch_size=16, lr=0.05)
    chains = [b for name, b in rbm.named_buffers() if "chain" in name]
    assert chains and all(_on_device(b) for b in chains)
    assert all(bool(torch.isfinite(p).all()) for p in rbm.parameters())


def _rolls(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((T, 88)) < 0.06 for T in (7, 3, 12)]


def test_ais_and_raise_on_cuda_bracket_the_exact_nll() -> None:
    cpu = tiny_music_model("rnn-rbm").double()
    gpu = tiny_music_model("rnn-rbm").double().to(DEVICE)
    rolls = _rolls()
    exact = sequence_nll(cpu, rolls, method="exact").nll
    fwd = sequence_nll(gpu, rolls, method="ais", ais_runs=200, ais_betas=300, seed=0)
    up = sequence_nll(gpu, rolls, method="raise", ais_runs=200, ais_betas=300, seed=0)
    assert abs(fwd.nll - exact) < 4 * fwd.se + 1e-3 and abs(up.nll - exact) < 4 * up.se + 1e-3


def test_cuda_evaluation_does_not_depend_on_blocks_per_call() -> None:
    model = tiny_music_model("rnn-rbm").to(DEVICE)
    rolls = _rolls(1)
    one = frame_log_probs(model, rolls, method="ais", ais_runs=8, ais_betas=20, seed=2)
    many = frame_log_probs(
        model, rolls, method="ais", ais_runs=8, ais_betas=20, seed=2, blocks_per_call=1
    )
    assert torch.equal(one.value, many.value)


def test_frame_accuracy_and_generation_on_cuda() -> None:
    model = tiny_music_model("rnn-rbm").to(DEVICE)
    rolls = _rolls(2)
    ds = PolyphonicDataset("toy", "memory", {"train": rolls, "test": rolls})
    out = evaluate(model, ds, method="ais", ais_runs=4, ais_betas=10, samples=3, gibbs_steps=2)
    assert 0.0 <= out["accuracy"]["accuracy"] <= 1.0
    rolls_out = generate_rolls(model, 16, n=2, seed=0)
    assert rolls_out.shape == (2, 16, 88) and set(np.unique(rolls_out)) <= {0.0, 1.0}


def test_sequence_model_losses_match_the_cpu() -> None:
    """The exact RNN-NADE loss on the device equals the CPU's to float64 rounding, and a CD
    surrogate's gradients are finite on both."""
    piece = toy_dataset()["train"][0]
    x = torch.as_tensor(np.asarray(piece), dtype=torch.float64)[None]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    for name in ("rnn-nade", "rnn-rbm"):
        cpu = build_sequence_model(name, n_visible=12, n_hidden=6, seed=0, dtype="float64")
        dev = build_sequence_model(name, n_visible=12, n_hidden=6, seed=0, dtype="float64")
        dev.to(DEVICE)
        loss_cpu, _ = cpu.loss((x, mask), generator=torch.Generator().manual_seed(0))
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        loss_dev, _ = dev.loss((x.to(DEVICE), mask.to(DEVICE)), generator=gen)
        loss_dev.backward()
        assert all(
            bool(torch.isfinite(p.grad).all()) for p in dev.parameters() if p.grad is not None
        )
        if name == "rnn-nade":
            assert loss_dev.item() == pytest.approx(loss_cpu.item(), rel=1e-10)


@pytest.mark.parametrize("name", ["rnn-rbm", "rtrbm", "rnn-nade"])
def test_the_written_out_gradient_on_the_device_is_autograds(name: str) -> None:
    """model.gradient='direct' on the device (the surrogate written out; the RNN on cuDNN's own
    backward) gives the default's loss and, to float64 rounding, its gradient."""
    piece = toy_dataset()["train"][0]
    x = torch.as_tensor(np.asarray(piece), dtype=torch.float64)[None].to(DEVICE)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=DEVICE)
    losses, grads = [], []
    for gradient in ("autograd", "direct"):
        model = build_sequence_model(
            name, n_visible=12, n_hidden=6, seed=0, dtype="float64", gradient=gradient
        ).to(DEVICE)
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        loss, _ = model.loss((x, mask), generator=gen)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    assert torch.equal(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        assert _on_device(b)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _torchrun(args: list[str], nproc: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "rnnrbm", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_a_training_epoch_syncs_with_the_host_only_at_its_end() -> None:
    """CUDA's sync debug mode warns at every host/device synchronisation. An RNN-RBM (CD-15,
    padded batches, Adam, clipping) trains 1 and then 3 epochs with ``sync_every`` larger
    than an epoch: the 2 extra epochs add the epoch ends' flushes and nothing per step."""
    import warnings

    from rnnrbm.data.batching import SequenceBatches
    from rnnrbm.models.sequence import SequenceEpochs
    from rnnrbm.training import TrainConfig, fit

    g = torch.Generator().manual_seed(0)
    rolls = [(torch.rand(n, 88, generator=g) < 0.1).float() for n in (9, 12, 7, 12, 10, 5)]

    def syncs(epochs: int) -> int:
        model = build_sequence_model("rnn-rbm", n_hidden=20, n_recurrent=10, device=DEVICE)
        batches = SequenceBatches(rolls, 2, seed=0, sort_by_length=True, device=DEVICE)
        config = TrainConfig(
            epochs=epochs, lr=1e-3, optimizer="adam", clip_grad_norm=1.0, sync_every=10_000
        )
        fit(model, SequenceEpochs(batches), None, config)  # warm-up: allocator, kernels
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if DEVICE == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                fit(model, SequenceEpochs(batches), None, config)
            finally:
                if DEVICE == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    one, three = syncs(1), syncs(3)
    assert three - one <= 2 * 2, (one, three)  # ≤ 2 syncs per epoch end, none per step


def test_nccl_evaluation_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    """NCCL needs one GPU per rank: 2 ranks where there are 2 devices, else 1 rank (the NCCL
    group and the gather still run)."""
    rolls = _rolls(4)
    data = tmp_path / "toy.json"
    split = [[(21 + np.flatnonzero(f)).tolist() for f in r] for r in rolls]
    data.write_text(json.dumps({"train": split, "valid": split, "test": split}))
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", tiny_music_model("rnn-rbm"))
    args = ["evaluate", str(ckpt), "--data", str(data), "--device", DEVICE, "--method", "ais"]
    args += ["--ais-runs", "16", "--ais-betas", "10", "--accuracy-samples", "3", "--json"]
    single = subprocess.run(
        [sys.executable, "-m", "rnnrbm", *args], capture_output=True, text=True, timeout=600
    )
    assert single.returncode == 0, single.stderr[-2000:]
    nproc = min(2, torch.cuda.device_count()) if DEVICE == "cuda" else 2
    res = _torchrun(args, nproc)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (single, res))
    for key in ("nll", "nll_conservative", "accuracy"):
        assert {k: v for k, v in a[key].items() if k != "seconds"} == {
            k: v for k, v in b[key].items() if k != "seconds"
        }


def test_data_parallel_training_under_torchrun_on_the_device(tmp_path: Path) -> None:
    """NCCL data-parallel training (one GPU per rank; 1 rank where there is 1 device) writes a
    checkpoint with every rank's sampler state, which evaluate reads in one process."""
    rolls = _rolls(5)
    data = tmp_path / "toy.json"
    split = [[(21 + np.flatnonzero(f)).tolist() for f in r] for r in rolls]
    data.write_text(json.dumps({"train": split * 4, "valid": split, "test": split}))
    recipe = Recipe.from_dict(
        {
            "device": DEVICE,
            "data": {"source": str(data)},
            "model": {"type": "rnn-rbm", "hidden": 8, "recurrent": 4, "k": 2},
            "stages": {
                "frames": {"epochs": 1, "batch_size": 8},
                "sequence": {"epochs": 2, "batch_size": 2},
            },
            "validation": {"ais_runs": 4, "ais_betas": 10},
        }
    )
    (tmp_path / "tiny.toml").write_text(recipe.to_toml())
    nproc = min(2, torch.cuda.device_count()) if DEVICE == "cuda" else 2
    out = tmp_path / "run"
    res = _torchrun(["train", "--recipe", str(tmp_path / "tiny.toml"), "--out", str(out)], nproc)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = load_checkpoint(out / "last.safetensors")
    assert meta.model is not None and meta.train_state["epoch"] == 2  # type: ignore[index]
    ev = subprocess.run(
        [sys.executable, "-m", "rnnrbm", "evaluate", str(out / "last.safetensors"), "--device",
         DEVICE, "--ais-runs", "4", "--ais-betas", "10", "--accuracy-samples", "0", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert np.isfinite(json.loads(ev.stdout.strip().splitlines()[-1])["nll"]["nll"])
