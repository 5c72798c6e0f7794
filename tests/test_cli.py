"""The ``rnnrbm`` CLI: every subcommand as a subprocess with tiny flags, plus in-process checks.

Subprocesses (``python -m rnnrbm.cli``) prove the real entry point: exit codes, one JSON object
on stdout, one-line errors on stderr. The error matrix and the resume comparisons call
``rnnrbm.cli.main`` in-process (same code, no 3-s interpreter start each). MIDI files are built
here with pretty_midi; tiny models (4 hidden units) keep every likelihood exact and fast.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pretty_midi
import pytest
import torch
from safetensors.torch import load_file

from conftest import bad_files
from rnnrbm.checkpoint import load_checkpoint
from rnnrbm.cli import main
from rnnrbm.data.polyphonic import load_bundled_jsb, load_polyphonic
from rnnrbm.music.midi import MidiFileError, MidiReadOptions, read_midi
from rnnrbm.recipes import Recipe

TINY = ["--hidden", "4", "--recurrent", "4", "--k", "1"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread avoids OpenMP oversubscription on a busy 2-core machine
    (measured: a 3-epoch run took 31 s with 2 threads beside another job, 0.8 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(*args, timeout=180):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "rnnrbm", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def one_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout  # exactly one JSON object, nothing else on stdout
    return json.loads(lines[0])


def write_midi(path, notes, *, key=None):
    """notes: (pitch, start_beat, end_beat) at 120 bpm; an optional key signature."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(90, p, a * 0.5, b * 0.5) for p, a, b in notes]
    pm.instruments.append(inst)
    if key is not None:
        pm.key_signature_changes.append(pretty_midi.KeySignature(key, 0.0))
    pm.write(str(path))
    return Path(path)


def chords(n_beats, root):
    return [(root + d + (i % 3), i, i + 1) for i in range(n_beats) for d in (0, 4, 7)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A MIDI corpus (5 good files + 1 text file named .mid) and a tiny model trained on it."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(5):
        write_midi(corpus / f"p{i}.mid", chords(8, 57 + 2 * i), key=(2 * i) % 12)
    (corpus / "notes.mid").write_text("not a MIDI file")
    out = root / "run"
    res = run_cli(
        "train", "--model", "rnn-rbm", "--data", corpus, "--out", out, "--epochs", "2",
        *TINY, "--pretrain-epochs", "1", "--batch-size", "2", "--valid-every", "1", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return SimpleNamespace(
        root=root, corpus=corpus, out=out, ckpt=out / "last.safetensors", result=res
    )


# ----------------------------------------------------------------------------------- env
def test_env_json():
    res = run_cli("env", "--json")
    assert res.returncode == 0 and res.stderr == ""
    info = one_json(res.stdout)
    assert info["torch"] == torch.__version__ and info["torch_threads"] >= 1


# ----------------------------------------------------------------------------------- train
def test_train_on_a_midi_folder_writes_checkpoints_and_lists_bad_files(run):
    info = one_json(run.result.stdout)
    assert info["model"] == "rnn-rbm" and info["epochs"] == 2
    assert info["model_config"]["n_hidden"] == 4
    data = info["data"]
    assert data["kind"] == "midi" and data["frames_per_beat"] == 2
    assert data["splits"]["train"]["sequences"] == 4 and data["splits"]["valid"]["sequences"] == 1
    skipped = {Path(s["file"]).name: s["reason"] for s in data["skipped"]}
    assert list(skipped) == ["notes.mid"] and "MThd" in skipped["notes.mid"]
    assert "skipped" in run.result.stderr and "notes.mid" in run.result.stderr
    assert [h["epoch"] for h in info["history"]] == [1.0, 2.0]
    assert all(np.isfinite(h["valid_nll"]) for h in info["history"])  # exact: 4 hidden units
    assert info["best"]["metric"] == "valid_nll"
    for key in ("last", "best", "recipe", "curves"):
        assert Path(info["paths"][key]).is_file()
    saved = Recipe.from_toml(run.out / "recipe.toml")
    assert saved.stages.sequence.epochs == 2 and saved.data.source == str(run.corpus)
    assert saved.data.max_len == 100  # user data: the model's JSB recipe in chunks
    assert info["recipe_settings"] == saved.to_dict()
    ck = load_checkpoint(run.out / "best.safetensors")
    assert ck.recipe == saved.to_dict()
    assert ck.framing["frames_per_beat"] == 2 and ck.framing["tempo_bpm"] == 120.0
    assert not [p for p in run.out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_resume_after_an_epoch_equals_the_uninterrupted_run(run, tmp_path, capsys):
    flags = ["train", "--model", "rnn-rbm", "--data", str(run.corpus), *TINY]
    flags += ["--pretrain-epochs", "1", "--batch-size", "2", "--json"]
    assert main([*flags, "--out", str(tmp_path / "a"), "--epochs", "3"]) == 0
    assert main([*flags, "--out", str(tmp_path / "b"), "--epochs", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--epochs", "3", "--json"]) == 0
    a, b = (load_file(tmp_path / d / "last.safetensors") for d in "ab")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    capsys.readouterr()


def test_ctrl_c_leaves_a_checkpoint_that_resumes_exactly(tmp_path, capsys):
    flags = ["train", "--model", "rnn-rbm", "--data", "jsb", *TINY, "--pretrain-epochs", "0"]
    flags += ["--batch-size", "4", "--max-len", "0", "--epochs", "3", "--valid-frames", "40"]
    flags += ["--json"]
    out = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnrbm", *flags, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not (out / "last.safetensors").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # in epoch 2, or at its boundary: either must resume exactly
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and stdout == ""
    state = load_checkpoint(out / "last.safetensors").train_state
    assert state["interrupted"] and state["epoch"] < 3
    assert main(["train", "--out", str(out), "--resume", "--json"]) == 0
    assert main([*flags, "--out", str(tmp_path / "whole")]) == 0
    a = load_file(tmp_path / "whole" / "last.safetensors")
    b = load_file(out / "last.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    capsys.readouterr()


def test_train_refuses_to_overwrite_and_needs_a_run_to_resume(run, tmp_path, capsys):
    before = sorted(p.name for p in run.out.iterdir())
    assert main(["train", "--model", "rbm", "--data", str(run.corpus), "--out", str(run.out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert sorted(p.name for p in run.out.iterdir()) == before
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "no such file" in err and not (tmp_path / "none").exists()
    assert main(["train", "--data", str(run.corpus), "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err


def test_train_text_mode_reports_each_epoch(run, tmp_path, capsys):
    code = main(
        ["train", "--model", "rnn-rbm", "--data", str(run.corpus), "--out", str(tmp_path / "t"),
         *TINY, "--epochs", "2", "--pretrain-epochs", "0", "--valid-every", "1"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    for epoch in (1, 2):  # the progress line of each epoch: loss and the validation figure
        line = next(ln for ln in out.splitlines() if ln.startswith(f"epoch {epoch}/2"))
        assert "train_loss=" in line and "valid_nll=" in line
    assert "wrote last:" in out and "wrote best:" in out


def test_train_with_carried_state_chunks(run, tmp_path, capsys):
    out = tmp_path / "carry"
    code = main(
        ["train", "--model", "rnn-nade", "--data", str(run.corpus), "--out", str(out),
         "--hidden", "4", "--recurrent", "4", "--epochs", "1", "--pretrain-epochs", "0",
         "--max-len", "4", "--carry-state", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert np.isfinite(info["history"][0]["train_loss"])
    data = Recipe.from_toml(out / "recipe.toml").data
    assert data.carry_state is True and data.max_len == 4


def test_train_with_weight_decay_lr_decay_and_rnn_pretraining(run, tmp_path, capsys):
    out = tmp_path / "decay"
    code = main(
        ["train", "--model", "rnn-nade", "--data", str(run.corpus), "--out", str(out),
         "--hidden", "4", "--recurrent", "4", "--epochs", "2", "--pretrain-epochs", "0",
         "--weight-decay", "1e-3", "--lr-decay", "0.5", "--lr-patience", "1",
         "--rnn-pretrain-epochs", "1", "--activation", "tanh", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert [h["lr"] > 0 for h in info["history"]] == [True, True]  # the schedule is reported
    recipe = Recipe.from_toml(out / "recipe.toml")
    seq = recipe.stages.sequence
    assert (seq.weight_decay, seq.lr_decay, seq.lr_patience) == (1e-3, 0.5, 1)
    assert recipe.stages.rnn.epochs == 1 and recipe.model.activation == "tanh"
    assert load_checkpoint(out / "last.safetensors").model.config()["activation"] == "tanh"
    rtrbm = tmp_path / "rtrbm"
    args = ["train", "--model", "rtrbm", "--data", str(run.corpus), "--out", str(rtrbm)]
    assert main([*args, "--activation", "tanh"]) == 2
    assert "--activation" in capsys.readouterr().err and not rtrbm.exists()
    bad_flags = [("--lr-decay", "1.5"), ("--lr-patience", "0"), ("--weight-decay", "-1")]
    for flag, value in [*bad_flags, ("--rnn-pretrain-epochs", "-1")]:
        bad = tmp_path / flag.strip("-")
        args = ["train", "--model", "rnn-nade", "--data", str(run.corpus), "--out", str(bad)]
        assert main([*args, flag, value]) == 2
        assert flag in capsys.readouterr().err and not bad.exists()


def test_plain_rbm_trains_generates_scores_and_evaluates(run, tmp_path, capsys):
    out = tmp_path / "rbm"
    code = main(
        ["train", "--model", "rbm", "--data", str(run.corpus), "--out", str(out),
         "--hidden", "4", "--k", "1", "--epochs", "2", "--batch-size", "8", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["best"]["metric"] == "neg_pseudo_loglik" and (out / "best.safetensors").is_file()
    ckpt = str(out / "last.safetensors")
    assert main(["score", ckpt, str(run.corpus / "p0.mid"), "--json"]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["estimator"] == "exact" and score["n_frames"] == 16
    assert main(["generate", ckpt, "--out", str(tmp_path / "g"), "--steps", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 4
    assert main(["evaluate", ckpt, "--data", str(run.corpus), "--split", "all", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["nll"]["n_frames"] == 80 and ev["nll"]["estimator"] == "exact"


# ----------------------------------------------------------------------------------- generate
def test_generate_with_a_midi_primer(run):
    primer = run.corpus / "p1.mid"
    res = run_cli(
        "generate", run.ckpt, "--out", run.root / "gen", "--primer", primer,
        "--primer-frames", "4", "--steps", "6", "--gibbs-steps", "2", "--n", "2", "--seed", "3",
        "--synth", "additive", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = one_json(res.stdout)
    assert info["frames"] == 10 and info["primer_frames"] == 4 and len(info["pieces"]) == 2
    assert info["transposition_semitones"] == -2  # p1 is in D major: generated in C, moved back
    original = read_midi(primer, MidiReadOptions(frames_per_beat=2)).roll
    for piece in info["pieces"]:
        assert {Path(p).suffix for p in piece.values()} == {".mid", ".wav", ".png"}
        roll = read_midi(piece["midi"], MidiReadOptions(frames_per_beat=2)).roll
        np.testing.assert_array_equal(roll[:4], original[:4])  # the primer, in its own key


def test_generate_is_reproducible_and_harmonises_a_melody(run, tmp_path, capsys):
    def roll(path):
        return read_midi(path, MidiReadOptions(frames_per_beat=2)).roll

    args = ["generate", str(run.ckpt), "--steps", "8", "--gibbs-steps", "2", "--seed", "7"]
    args += ["--synth", "additive", "--json"]
    for d in ("x", "y"):
        assert main([*args, "--out", str(tmp_path / d)]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(roll(tmp_path / "x/sample.mid"), roll(tmp_path / "y/sample.mid"))

    tune = [(72, 0, 1), (74, 1, 2), (76, 2, 3), (79, 3, 4)]
    melody = write_midi(tmp_path / "tune.mid", tune, key=0)
    code = main(
        ["generate", str(run.ckpt), "--out", str(tmp_path / "h"), "--clamp", str(melody),
         "--gibbs-steps", "2", "--synth", "additive", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 8 and info["melody"] == str(melody)
    out = roll(info["pieces"][0]["midi"])
    mel = read_midi(melody, MidiReadOptions(frames_per_beat=2)).roll
    assert out[mel].all()  # every melody note sounds
    for t in range(8):  # and nothing above it
        assert not out[t, np.flatnonzero(mel[t]).max() + 1 :].any()


def test_generate_from_a_dataset_primer(run, tmp_path, capsys):
    code = main(
        ["generate", str(run.ckpt), "--out", str(tmp_path), "--primer", "jsb:test:0",
         "--primer-frames", "3", "--steps", "2", "--gibbs-steps", "1", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["primer"] == "jsb:test:0" and info["frames"] == 5
    first = load_polyphonic("jsb", splits=("test",))["test"][0][:3]
    out = read_midi(info["pieces"][0]["midi"], MidiReadOptions(frames_per_beat=2)).roll
    np.testing.assert_array_equal(out[:3], first)


# ----------------------------------------------------------------------------------- score
def test_score_prints_exact_per_frame_log_likelihoods(run):
    target = run.corpus / "p3.mid"
    res = run_cli("score", run.ckpt, target, "--json")
    assert res.returncode == 0, res.stderr
    info = one_json(res.stdout)
    assert info["estimator"] == "exact" and info["n_frames"] == 16
    assert info["file"] == str(target) and "nats" in info["units"]
    model = load_checkpoint(run.ckpt).model.eval()
    roll = read_midi(target, MidiReadOptions(frames_per_beat=2, transpose_to_c=True)).roll
    ref = model.log_prob(torch.from_numpy(roll).float()[None]).value[0].numpy()
    np.testing.assert_allclose(info["per_frame"], ref, rtol=1e-5, atol=1e-5)
    assert info["log_likelihood_per_frame"] == pytest.approx(ref.mean(), rel=1e-6)


def test_score_text_output(run, capsys):
    assert main(["score", str(run.ckpt), str(run.corpus / "p3.mid"), "--per-frame"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "nats per frame over 16 frames (exact)" in lines[0] and len(lines) == 17


# ----------------------------------------------------------------------------------- evaluate
def test_evaluate_prints_the_protocol_figures(run):
    res = run_cli(
        "evaluate", run.ckpt, "--data", run.corpus, "--split", "valid",
        "--accuracy-samples", "2", "--gibbs-steps", "2", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = one_json(res.stdout)
    assert info["nll"]["n_frames"] == 16 and info["nll"]["estimator"] == "exact"
    assert 0 < info["nll"]["nll"] < 88 * np.log(2) + 1
    assert info["accuracy"]["samples"] == 2 and 0 <= info["accuracy"]["accuracy"] <= 1


def test_evaluate_reports_whether_ais_converged(run, capsys):
    args = [
        "evaluate", str(run.ckpt), "--data", str(run.corpus), "--split", "valid",
        "--method", "ais", "--ais-runs", "4", "--ais-betas", "3", "--accuracy-samples", "0",
    ]  # fmt: skip
    assert main([*args, "--json"]) == 0
    nll = json.loads(capsys.readouterr().out)["nll"]
    assert nll["estimator"].startswith("ais(runs=4, betas=3") and nll["runs_gap"] is not None
    assert nll["converged"] == (nll["runs_gap"] <= max(3 * nll["se"], 0.01))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"doubling the runs moved it {nll['runs_gap']:+.3f}" in out
    assert "conservative NLL" in out and "raise(runs=4, betas=3" in out and "lies in [" in out
    assert main([*args, "--no-conservative", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nll_conservative"] is None


def test_evaluate_names_the_missing_split(run, capsys):
    assert main(["evaluate", str(run.ckpt), "--data", str(run.corpus), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "--split" in err and "train, valid, all" in err and "'test'" in err


# ----------------------------------------------------------------------------------- demos
def test_music_demo_tiny_and_its_checkpoint_plays_at_the_demo_framing(tmp_path, capsys):
    out = tmp_path / "demo"
    settings = [
        "stages.sequence.epochs=1", "stages.frames.epochs=1", "model.hidden=4",
        "model.recurrent=4", "model.k=1", "stages.sequence.batch_size=32",
        "validation.frames=60", "evaluation.ais_runs=2", "evaluation.ais_betas=10",
        "generation.steps=12",
    ]  # fmt: skip
    res = run_cli("demo", "--out", out, *[f"--set={s}" for s in settings], "--json")
    assert res.returncode == 0, res.stderr
    info = one_json(res.stdout)
    assert info["test_nll"]["n_frames"] == 4725
    assert info["test_nll"]["estimator"].startswith("ais(runs=2, betas=10")
    assert info["test_nll_conservative"]["estimator"].startswith("raise(runs=2, betas=10")
    assert info["test_nll_interval"]["conservative"] == info["test_nll_conservative"]["nll"]
    train = load_bundled_jsb().frames("train")
    assert info["notes_per_frame"]["train"] == round(float(train.sum(-1).mean()), 2)
    assert 0 <= info["notes_per_frame"]["generated"] <= 88
    assert (info["framing"]["frames_per_beat"], info["framing"]["tempo_bpm"]) == (1, 90.0)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["chorale.mid", "chorale.png", "chorale.wav", "loss.png", "rnn_rbm.safetensors"]
    assert read_midi(out / "chorale.mid", MidiReadOptions(frames_per_beat=1)).roll.shape[0] <= 12
    # `generate` on the demo's checkpoint plays at the demo's 1 frame per beat and 90 bpm:
    # 16 frames = 16 beats = 16 × 60 / 90 s, with no flag naming the framing.
    ckpt = str(out / "rnn_rbm.safetensors")
    gen = tmp_path / "gen"
    assert main(["generate", ckpt, "--out", str(gen), "--steps", "16", "--json"]) == 0
    played = json.loads(capsys.readouterr().out)
    assert (played["frames_per_beat"], played["tempo_bpm"]) == (1, 90.0)
    assert played["framing_source"] == "checkpoint"
    stats = played["statistics"]
    assert stats["generated"]["frames"] == 16
    assert stats["reference"]["split"] == "test" and stats["reference"]["frames"] == 4725
    assert info["statistics"]["reference"] == stats["reference"]  # the demo's, the same data
    assert info["statistics"]["generated"]["frames"] == 12
    midi = pretty_midi.PrettyMIDI(str(gen / "sample.mid"))
    assert midi.get_tempo_changes()[1].tolist() == pytest.approx([90.0], rel=1e-5)  # µs/beat
    assert midi.get_end_time() <= 16 * 60 / 90 + 1e-3


@pytest.mark.parametrize("model", ["rbm", "dbn", "dbm"])
def test_digits_demo_tiny(tmp_path, model):
    out = tmp_path / "digits"
    hidden = ["8"] if model == "rbm" else ["8", "6"]
    res = run_cli(
        "demo-digits", "--model", model, "--out", out, "--epochs", "1", "--hidden", *hidden,
        "--k", "1", "--ais-runs", "4", "--ais-betas", "20", "--steps-per-row", "2", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = one_json(res.stdout)
    assert info["command"] == "demo-digits" and info["model"] == model
    assert info["layers"] == ([64, 8] if model == "rbm" else [64, 8, 6])
    fig = info["figures"]
    assert fig["units"] == "nats per image" and fig["n_test"] == 359
    assert (
        -64 * math.log(2) - 1 < fig["test_log_likelihood"] < 0
        and fig["test_log_likelihood_se"] >= 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{model}-filters.png", f"{model}-samples.png"]


def test_digits_demo_reads_mnist_from_disk(tmp_path, idx):
    (tmp_path / "mnist").mkdir()
    idx.make_mnist(tmp_path / "mnist", n=12)
    out = tmp_path / "out"
    res = run_cli(
        "demo-digits", "--mnist", tmp_path / "mnist", "--out", out, "--epochs", "1", "--hidden",
        "5", "--k", "1", "--ais-runs", "0", "--steps-per-row", "1", "--n-train", "10", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    info = one_json(res.stdout)
    assert info["layers"] == [784, 5] and info["dataset"].startswith("MNIST")
    assert info["figures"]["n_train"] == 10 and info["figures"]["test_log_likelihood"] is None
    missing = run_cli("demo-digits", "--mnist", tmp_path / "nowhere", "--out", tmp_path / "o2")
    assert missing.returncode == 2 and missing.stdout == ""
    assert "nowhere" in missing.stderr and "Fix:" in missing.stderr
    assert not (tmp_path / "o2").exists()
    two = run_cli("demo-digits", "--hidden", "5", "5", "--out", tmp_path / "o3")
    assert two.returncode == 2 and "hidden" in two.stderr and "--hidden 100" in two.stderr
    assert not (tmp_path / "o3").exists()


# ----------------------------------------------------------------------------------- errors
def _check_error(capsys, code, path, out_dir=None):
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err  # one line, no traceback
    assert str(path) in lines[0] and "Fix:" in lines[0] and "Traceback" not in lines[0]
    if out_dir is not None:
        assert not Path(out_dir).exists()  # nothing written


@pytest.mark.parametrize("kind", ["zero-byte", "truncated", "text", "absurd-header"])
def test_corrupt_midi_files_give_one_line_and_exit_2(run, tmp_path, capsys, kind):
    bad = bad_files(tmp_path / "bad")[kind]
    ckpt = str(run.ckpt)
    _check_error(capsys, main(["score", ckpt, str(bad)]), bad)
    for flag in ("--primer", "--clamp"):
        out = tmp_path / f"gen{flag}"
        code = main(["generate", ckpt, "--out", str(out), flag, str(bad)])
        _check_error(capsys, code, bad, out)
    out = tmp_path / "t"
    code = main(["train", "--model", "rnn-rbm", "--data", str(bad), "--out", str(out), "--json"])
    _check_error(capsys, code, bad, out)


def test_a_corrupt_file_through_the_real_entry_point(run, tmp_path):
    bad = bad_files(tmp_path)["absurd-header"]
    res = run_cli("score", run.ckpt, bad, "--json")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert str(bad) in res.stderr and "tracks" in res.stderr and "Fix:" in res.stderr


def test_verbose_shows_the_exception(run, tmp_path):
    bad = bad_files(tmp_path)["text"]
    with pytest.raises(MidiFileError, match=r"text\.mid"):
        main(["score", str(run.ckpt), str(bad), "--verbose"])


def test_a_folder_of_only_bad_files_and_bad_checkpoints(run, tmp_path, capsys):
    folder = tmp_path / "bad"
    bad_files(folder)
    out = tmp_path / "t"
    code = main(["train", "--model", "rnn-rbm", "--data", str(folder), "--out", str(out)])
    _check_error(capsys, code, folder, out)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 10)
    good = run.corpus / "p0.mid"
    _check_error(capsys, main(["score", str(fake), str(good)]), fake)
    digits = tmp_path / "digits.safetensors"
    from rnnrbm.models import RBM

    RBM(64, 3).save(digits)
    _check_error(capsys, main(["generate", str(digits), "--out", str(tmp_path / "o")]), digits)
    missing = tmp_path / "missing.mid"
    _check_error(capsys, main(["score", str(run.ckpt), str(missing)]), missing)
    _check_error(capsys, main(["generate", str(run.ckpt), "--out", str(good)]), good)
    code = main(["train", "--model", "rbm", "--data", str(run.corpus), "--out", str(good)])
    _check_error(capsys, code, good)


@pytest.mark.parametrize("name", ["rtrbm", "lstm-rtrbm", "rnn-nade"])
def test_every_temporal_model_trains_and_scores(run, tmp_path, capsys, name):
    out = tmp_path / name
    code = main(
        ["train", "--model", name, "--data", str(run.corpus), "--out", str(out), *TINY,
         "--epochs", "1", "--pretrain-epochs", "1", "--json"]
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["model"] == name
    ckpt = str(out / "last.safetensors")
    assert main(["score", ckpt, str(run.corpus / "p2.mid"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["estimator"] == "exact"
    code = main(
        ["generate", ckpt, "--out", str(out / "g"), "--steps", "3", "--gibbs-steps", "2",
         "--mean-last", "--synth", "additive", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mean_last"] and Path(info["pieces"][0]["png"]).is_file()


def test_loss_curves_join_sparse_validation_checks():
    from rnnrbm.plotting import history_curves as _history_curves

    history = [{"train_loss": 1.0}, {"train_loss": 0.5, "valid_nll": 8.0}, {"train_loss": 0.4}]
    history += [{"train_loss": 0.3, "valid_nll": 7.0}, {"train_loss": 0.2}]
    curves = _history_curves(history)
    assert curves["training loss (surrogate; exact NLL for NADE)"] == [1.0, 0.5, 0.4, 0.3, 0.2]
    valid = curves["validation NLL per frame"]
    assert np.isnan(valid[0]) and valid[1:4] == [8.0, 7.5, 7.0] and np.isnan(valid[4])


def test_a_checkpoint_without_framing_falls_back_and_says_so(run, tmp_path, capsys):
    from rnnrbm.checkpoint import save_checkpoint

    model = load_checkpoint(run.ckpt).model
    bare = save_checkpoint(tmp_path / "old" / "model.safetensors", model)  # no recipe, no framing
    args = ["generate", str(bare), "--out", str(tmp_path / "g1"), "--steps", "4", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert info["framing_source"] == "default"
    assert (info["frames_per_beat"], info["tempo_bpm"]) == (2, 120.0)
    assert "does not record how its data were framed" in captured.err and "--tempo" in captured.err
    # A checkpoint of the previous version: the run.json that `rnnrbm train` wrote beside it.
    legacy = {"data": {"spec": "jsb", "name": "jsb", "frames_per_beat": 1, "transpose_to_c": True}}
    (bare.parent / "run.json").write_text(json.dumps(legacy))
    args = ["generate", str(bare), "--out", str(tmp_path / "g2"), "--steps", "4", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    assert info["framing_source"] == "run.json" and info["frames_per_beat"] == 1
    assert captured.err == ""
    # Flags override any framing.
    args += ["--frames-per-beat", "4", "--tempo", "60"]
    args[3] = str(tmp_path / "g3")
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["frames_per_beat"], info["tempo_bpm"]) == (4, 60.0)


def test_evaluate_defaults_to_the_checkpoint_data_and_recipe_settings(run, capsys):
    assert main(["evaluate", str(run.ckpt), "--split", "valid", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["data"] == str(run.corpus) and info["nll"]["n_frames"] == 16
    assert info["accuracy"]["samples"] == 20  # the recipe's evaluation.accuracy_samples


def test_recipes_lists_every_bundled_recipe_with_its_figure(capsys):
    from rnnrbm.recipes import bundled_names

    assert main(["recipes", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in info["recipes"]] == bundled_names()
    rnn_rbm = next(r for r in info["recipes"] if r["name"] == "jsb-rnn-rbm")
    assert rnn_rbm["expected"]["test_nll"] == 5.634 and "nats per frame" in info["units"]
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "jsb-rnn-nade" in out and "test NLL 5.111 (exact)" in out
    assert "seeds 0–4: [5.642, 5.662]" in out  # each recipe's note: the mean over seeds
    assert main(["recipes", "--show", "jsb-rnn-nade"]) == 0
    assert 'type = "rnn-nade"' in capsys.readouterr().out


def test_train_rejects_bad_recipes_before_writing(tmp_path, capsys):
    out = tmp_path / "r"
    _check_error(
        capsys, main(["train", "--recipe", "jsb-rnn-rbn", "--out", str(out)]), "jsb-rnn-rbm", out
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[stages.sequence]\nlr = -1\n")
    _check_error(
        capsys, main(["train", "--recipe", str(bad), "--out", str(out)]), "stages.sequence.lr", out
    )
    code = main(["train", "--recipe", "jsb-rnn-nade", "--set", "model.hiden=3", "--out", str(out)])
    _check_error(capsys, code, "model.hiden", out)
    code = main(["train", "--recipe", "jsb-rnn-nade", "--lr", "0", "--out", str(out)])
    _check_error(capsys, code, "--lr", out)


def test_train_by_recipe_with_set_trains_the_named_settings(run, tmp_path, capsys):
    out = tmp_path / "nade"
    code = main(
        ["train", "--recipe", "jsb-rnn-nade", "--data", str(run.corpus), "--out", str(out),
         "--set", "model.hidden=4", "--set", "model.recurrent=4", "--set", "stages.rnn.epochs=0",
         "--epochs", "1", "--pretrain-epochs", "0", "--json"]
    )  # fmt: skip
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "rnn-nade" and info["model_config"]["n_hidden"] == 4
    assert info["recipe_settings"]["stages"]["sequence"]["lr"] == 1e-2  # from the recipe
    assert info["recipe_settings"]["expected"]["test_nll"] == 0.0  # a run is not its row
