"""The ``rnnrbm`` command line: a thin layer over the library.

    rnnrbm train     --model M --data D --out DIR    train (checkpoints every epoch + best)
    rnnrbm generate  CKPT --out DIR                  sample music: MIDI, WAV, piano-roll PNG
    rnnrbm score     CKPT FILE.mid                   log-likelihood per frame of a MIDI file
    rnnrbm evaluate  CKPT --data D --split test      the benchmark protocol (NLL/frame, accuracy)
    rnnrbm demo                                      RNN-RBM on the bundled JSB Chorales, on CPU
    rnnrbm demo-digits                               an RBM on the bundled 8×8 digits
    rnnrbm env                                       versions, device, threads (for bug reports)

argparse (standard library) keeps the CLI dependency-free and its help text plain. Every command
takes ``--json`` and then prints exactly one JSON object on stdout (progress goes to stderr, or is
off); user errors are one line on stderr naming the file or field and the fix, with exit code 2
(``--verbose`` shows the traceback); an interrupted ``train`` exits 130 and leaves a resumable
checkpoint. Commands write their files atomically: an error leaves no partial output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rnnrbm
from rnnrbm.validation import (
    CheckpointError,
    DataFormatError,
    InputError,
    InputTypeError,
    NonFiniteError,
    error_message,
)

__all__ = ["build_parser", "main"]

USER_ERRORS = (
    InputError,
    InputTypeError,
    DataFormatError,
    CheckpointError,
    FileNotFoundError,
    NonFiniteError,
)
MUSIC_MODELS = ("rnn-rbm", "rtrbm", "lstm-rtrbm", "rnn-nade", "rbm")
DATA_HELP = (
    "jsb | nottingham | musedata | piano-midi | a .json.gz/.pickle file | a MIDI file or folder"
)


# ----------------------------------------------------------------------------------- helpers
def _emit(args: argparse.Namespace, result: dict[str, Any], lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for line in lines:
            print(line)


def _note(args: argparse.Namespace, line: str) -> None:
    """A side remark (skipped files, resume hints): stderr, so ``--json`` stdout stays clean."""
    print(f"rnnrbm {args.command}: {line}", file=sys.stderr)


def _user_error(what: str, expected: str, got: str, fix: str) -> InputError:
    return InputError(error_message(what, expected, got, fix))


def _load_music_model(path: str, device: str | None) -> tuple[Any, dict[str, Any]]:
    """A checkpoint's model, checked to be a model of 88-key piano-roll frames."""
    from rnnrbm.checkpoint import load_checkpoint
    from rnnrbm.models import RBM, SequenceModel
    from rnnrbm.validation import resolve_device

    ck = load_checkpoint(path, device=resolve_device(device))
    model = ck.model
    ok = isinstance(model, SequenceModel) or (
        isinstance(model, RBM) and getattr(model, "visible", "") == "bernoulli"
    )
    if not ok or model.n_visible != 88:
        raise _user_error(
            f"checkpoint {path}",
            "a music model (rnn-rbm, rtrbm, lstm-rtrbm, rnn-nade or rbm) of 88 keys",
            f"a {ck.meta.get('model_type')} with {getattr(model, 'n_visible', '?')} visible units",
            "pass a checkpoint written by `rnnrbm train`",
        )
    model.eval()
    return model, ck.meta


def _midi_options(args: argparse.Namespace, info: dict[str, Any]) -> Any:
    """How to read MIDI for a model: the training run's framing unless overridden."""
    from rnnrbm.music.midi import MidiReadOptions

    data = info.get("data", {}) if isinstance(info.get("data"), dict) else {}
    fpb = args.frames_per_beat or int(data.get("frames_per_beat", 2))
    transpose = bool(data.get("transpose_to_c", True)) and not args.no_transpose
    return MidiReadOptions(
        frames_per_beat=fpb, transpose_to_c=transpose, apply_sustain=args.sustain
    )


def _add_midi_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--frames-per-beat",
        type=int,
        default=None,
        help=f"frames per beat when reading {what} (default: the training data's, else 2)",
    )
    p.add_argument(
        "--no-transpose",
        action="store_true",
        help=f"keep {what} in its key (default: move it to C major/minor, as the benchmarks)",
    )
    p.add_argument("--sustain", action="store_true", help="apply the sustain pedal (CC64)")


# ----------------------------------------------------------------------------------- env
def cmd_env(args: argparse.Namespace) -> int:
    """Versions, device and threads — paste this into bug reports."""
    result = {
        "rnnrbm": rnnrbm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "default_dtype": str(torch.get_default_dtype()),
    }
    _emit(args, result, [f"{k}: {v}" for k, v in result.items()])
    return 0


# ----------------------------------------------------------------------------------- train
def _write_json(path: Path, obj: dict[str, Any]) -> Path:
    from rnnrbm.music.midi import atomic_write

    data = (json.dumps(obj, indent=2, default=str) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def _train_model(
    name: str,
    data: Any,
    out: Path,
    settings: dict[str, Any],
    args: argparse.Namespace,
    resume: Path | None,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, Any, Any]:
    """Build (or reload) the model and train it; returns (model, result, monitored metric).

    Temporal models go through ``recipes.train_sequence_model`` (frame pretraining, then
    sequence training with a validation NLL monitor), a plain RBM through ``training.fit``.
    ``settings`` (stored in ``run.json``) fix everything that shapes the run, so ``--resume``
    rebuilds the same batches, optimiser and schedule and continues exactly.
    """
    from rnnrbm.validation import resolve_device

    device = resolve_device(args.device)
    ds = data.dataset
    seed = int(settings["seed"])
    clip = settings["clip_grad_norm"] or None
    model: Any = None
    if resume is not None:
        from rnnrbm.checkpoint import load_checkpoint

        model = load_checkpoint(resume, device=device).model
    if name != "rbm":
        from rnnrbm.recipes import train_sequence_model

        options: dict[str, Any] = {"n_hidden": settings["hidden"], "device": device}
        if name != "rtrbm":
            options["n_recurrent"] = settings["recurrent"]
        if settings.get("activation"):  # None: the model's own default
            options["activation"] = settings["activation"]
        model, result = train_sequence_model(
            model if model is not None else name,
            ds,
            epochs=int(settings["epochs"]),
            batch_size=int(settings["batch_size"]),
            lr=float(settings["lr"]),
            optimizer=str(settings["optimizer"]),
            clip_grad_norm=clip,
            k=None if (model is not None or name == "rnn-nade") else int(settings["k"]),
            max_len=int(settings["max_len"]) or None,
            carry_state=bool(settings.get("carry_state", False)),
            pretrain_epochs=int(settings["pretrain_epochs"]),
            rnn_pretrain_epochs=int(settings.get("rnn_pretrain_epochs", 0)),
            valid_every=int(settings["valid_every"]),
            valid_frames=settings["valid_frames"] or None,
            patience=settings["patience"] or None,
            **_schedule(settings),
            restore_best=False,  # best.safetensors holds the best epoch; the run ends on last
            seed=seed,
            checkpoint_dir=str(out),
            progress=not args.json,
            resume=None if resume is None else str(resume),
            callbacks=callbacks,
            model_options=None if model is not None else options,
        )
        return model, result, "valid_nll"
    # A plain RBM of independent frames: the shared loop on rows.
    from rnnrbm.models import RBM
    from rnnrbm.training import RowBatches, TrainConfig, fit

    if model is None:
        model = RBM(88, settings["hidden"], k=settings["k"], method="pcd", seed=seed, device=device)
    dtype = next(model.parameters()).dtype

    def frames(split: str) -> torch.Tensor:
        return torch.from_numpy(ds.frames(split)).to(device=device, dtype=dtype)

    config = TrainConfig(
        epochs=int(settings["epochs"]),
        batch_size=int(settings["batch_size"]),
        lr=float(settings["lr"]),
        optimizer=str(settings["optimizer"]),
        clip_grad_norm=clip,
        seed=seed,
        checkpoint_dir=str(out),
        monitor="neg_pseudo_loglik",
        patience=settings["patience"] or None,
        **_schedule(settings),
        progress=not args.json,
    )
    valid = frames("valid") if ds.splits.get("valid") else None
    batches = RowBatches(frames("train"), config.batch_size, seed=seed)
    result = fit(model, batches, valid, config, callbacks, resume=resume)
    return model, result, config.monitor


def _schedule(settings: dict[str, Any]) -> dict[str, Any]:
    """Weight decay and plateau lr decay from run.json (runs saved before they existed: off)."""
    return {
        "weight_decay": float(settings.get("weight_decay", 0.0)),
        "lr_decay": float(settings.get("lr_decay", 0.0)) or None,
        "lr_patience": int(settings.get("lr_patience", 2)),
    }


def cmd_train(args: argparse.Namespace) -> int:
    """Train a music model; checkpoints ``last``/``best`` each epoch; ``--resume`` continues."""
    from rnnrbm.generation import RUN_INFO_NAME, load_music_data
    from rnnrbm.music.midi import MidiReadOptions

    start = time.perf_counter()
    out = Path(args.out)
    last = out / "last.safetensors"
    info: dict[str, Any] = {}
    if args.resume:
        if not last.is_file():
            raise _user_error(
                "--resume",
                f"a checkpoint {last} from an earlier `rnnrbm train --out {out}`",
                "no such file",
                "drop --resume to start a new run, or pass the --out of the run to continue",
            )
        try:
            info = json.loads((out / RUN_INFO_NAME).read_text(encoding="utf-8"))
            info["train"]["epochs"] = args.epochs or info["train"]["epochs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _user_error(
                f"{out / RUN_INFO_NAME}",
                "the run description written by `rnnrbm train`",
                f"{type(exc).__name__}: {exc}",
                "resume a run started by `rnnrbm train` (its --out folder)",
            ) from exc
    elif out.exists() and not out.is_dir():
        raise _user_error(f"--out {out}", "a folder", "an existing file", "pass a folder path")
    elif last.exists():
        raise _user_error(
            f"--out {out}",
            "a folder without a checkpoint (a new run)",
            f"an existing run ({last})",
            "pass --resume to continue it, or choose another --out",
        )
    elif args.model is None or args.data is None:
        missing = "--model" if args.model is None else "--data"
        expected = f"one of {', '.join(MUSIC_MODELS)}" if args.model is None else DATA_HELP
        raise _user_error(missing, expected, "nothing", f"pass {missing} (or --resume)")
    model_name = info.get("model", args.model)
    saved_data = info.get("data", {})
    data_spec = saved_data.get("spec", args.data)
    midi_options = MidiReadOptions(
        frames_per_beat=int(saved_data.get("frames_per_beat", args.frames_per_beat or 2)),
        transpose_to_c=bool(saved_data.get("transpose_to_c", not args.no_transpose)),
        apply_sustain=bool(saved_data.get("apply_sustain", args.sustain)),
    )
    # Everything that can fail on the user's input happens before the first file is written.
    data = load_music_data(data_spec, options=midi_options)
    for f, reason in data.skipped:
        _note(args, f"skipped {f}: {reason}")
    if not info:
        for flag in (
            "epochs",
            "batch_size",
            "hidden",
            "recurrent",
            "k",
            "max_len",
            "pretrain_epochs",
            "rnn_pretrain_epochs",
            "valid_every",
            "valid_frames",
            "patience",
        ):
            value = getattr(args, flag)
            zero_ok = (
                "pretrain_epochs",
                "rnn_pretrain_epochs",
                "max_len",
                "valid_frames",
                "patience",
            )
            lowest = 0 if flag in zero_ok else 1
            if value is not None and value < lowest:
                raise _user_error(
                    f"--{flag.replace('_', '-')}", "a positive integer", str(value), "raise it"
                )
        if not 0.0 <= args.lr_decay < 1.0:
            raise _user_error("--lr-decay", "a factor in [0, 1)", str(args.lr_decay), "e.g. 0.5")
        if args.lr_patience < 1:
            raise _user_error("--lr-patience", "an integer >= 1", str(args.lr_patience), "raise it")
        if args.weight_decay < 0:
            raise _user_error("--weight-decay", "a value >= 0", str(args.weight_decay), "e.g. 1e-4")
        if args.activation is not None and model_name not in ("rnn-rbm", "rnn-nade"):
            raise _user_error(
                "--activation",
                "no value for this model (only rnn-rbm and rnn-nade have an RNN recurrence)",
                args.activation,
                "drop --activation",
            )
        info = {
            "format": "rnnrbm-run",
            "model": model_name,
            "data": {"spec": str(data_spec), "apply_sustain": args.sustain, **data.describe()},
            "train": {
                "epochs": args.epochs or 20,
                "batch_size": args.batch_size or (100 if model_name == "rbm" else 10),
                "lr": args.lr,
                "optimizer": args.optimizer,
                "clip_grad_norm": args.clip,
                "weight_decay": args.weight_decay,
                "lr_decay": args.lr_decay,
                "lr_patience": args.lr_patience,
                "seed": args.seed,
                "hidden": args.hidden,
                "recurrent": args.recurrent,
                "activation": args.activation,
                "k": args.k,
                "max_len": args.max_len,
                "carry_state": args.carry_state,
                "pretrain_epochs": args.pretrain_epochs,
                "rnn_pretrain_epochs": args.rnn_pretrain_epochs,
                "valid_every": args.valid_every,
                "valid_frames": args.valid_frames,
                "patience": args.patience,
            },
            "command": ["rnnrbm", *sys.argv[1:]],
        }
    out.mkdir(parents=True, exist_ok=True)
    run_path = _write_json(out / RUN_INFO_NAME, info)  # before training: Ctrl-C can resume
    # SIGINT always stops training cleanly, even when the shell started us with it ignored (a
    # background job): training.fit then defers it to the next step boundary and writes last.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        model, result, monitor = _train_model(
            model_name, data, out, info["train"], args, last if args.resume else None
        )
    except KeyboardInterrupt:
        if last.is_file():
            _note(
                args, f"interrupted; checkpoint {last}; continue: rnnrbm train --out {out} --resume"
            )
        else:
            _note(args, "interrupted before the first checkpoint; nothing to resume")
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    history = result.history
    paths: dict[str, str] = {"last": str(last), "run": str(run_path)}
    if (out / "best.safetensors").is_file():
        paths["best"] = str(out / "best.safetensors")
    curves = _history_curves(history)
    if curves:
        from rnnrbm.plotting import save_curves

        paths["curves"] = str(
            save_curves(curves, out / "curves.png", ylabel="nats", title=f"{model_name} training")
        )
    final = history[-1] if history else {}
    state = result.state
    res = {
        "command": "train",
        "model": model_name,
        "model_config": model.config(),
        "data": info["data"],
        "train": info["train"],
        "epochs": state.epoch,
        "steps": state.step,
        "final": final,
        "best": None
        if state.best is None
        else {"epoch": state.best_epoch, "metric": monitor, "value": state.best},
        "history": history,
        "paths": paths,
        "seconds": round(time.perf_counter() - start, 2),
    }
    shown = "  ".join(f"{k}={v:.4g}" for k, v in final.items() if k != "epoch")
    _emit(
        args,
        res,
        [
            f"trained {model_name} for {state.epoch} epochs ({state.step} steps) "
            f"on {data.dataset.name}: {shown}",
            *(f"wrote {k}: {v}" for k, v in paths.items()),
            f"done in {res['seconds']} s",
        ],
    )
    return 0


def _history_curves(history: list[dict[str, float]]) -> dict[str, list[float]]:
    """Curves for ``save_curves``; a metric checked every few epochs is joined by straight
    lines between its checks (NaN gaps would leave isolated, invisible points)."""
    if not history:
        return {}
    keys = ("train_loss", "valid_nll", "neg_pseudo_loglik")
    keys = tuple(k for k in keys if any(k in h for h in history))
    names = {
        "train_loss": "training loss (surrogate; exact NLL for NADE)",
        "valid_nll": "validation NLL per frame",
        "neg_pseudo_loglik": "validation −pseudo-log-likelihood per frame",
    }
    curves = {}
    for k in keys:
        y = np.array([h.get(k, math.nan) for h in history], dtype=float)
        seen = np.flatnonzero(~np.isnan(y))
        inside = np.arange(seen[0], seen[-1] + 1)
        y[inside] = np.interp(inside, seen, y[seen])
        curves[names[k]] = y.tolist()
    return curves


# ----------------------------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    """Sample pieces from a checkpoint; write MIDI, WAV and PNG; print their paths."""
    from rnnrbm.generation import generate_music, load_primer, read_run_info

    start = time.perf_counter()
    if not args.name or Path(args.name).name != args.name or args.name.startswith("."):
        raise _user_error("--name", "a plain file stem such as 'sample'", repr(args.name), "fix it")
    model, _ = _load_music_model(args.checkpoint, args.device)
    info = read_run_info(args.checkpoint)
    opts = _midi_options(args, info)
    primer = melody = None
    if args.primer is not None:
        primer = load_primer(args.primer, args.primer_frames, options=opts)
    if args.clamp is not None:
        melody = load_primer(args.clamp, None, options=opts)
    piece = generate_music(
        model,
        args.out,
        steps=args.steps,
        gibbs_steps=args.gibbs_steps,
        primer=primer,
        melody=melody,
        melody_on_top=not args.melody_anywhere,
        n=args.n,
        seed=args.seed,
        mean_last=args.mean_last,
        frames_per_beat=opts.frames_per_beat,
        tempo_bpm=args.tempo,
        stem=args.name,
        synth=args.synth,
    )
    res = {
        "command": "generate",
        "checkpoint": args.checkpoint,
        **piece.as_dict(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    lines = [f"generated {args.n} piece(s) of {res['frames']} frames"]
    for p in res["pieces"]:
        lines += [f"wrote {k}: {v}" for k, v in p.items()]
    _emit(args, res, lines)
    return 0


# ----------------------------------------------------------------------------------- score
def cmd_score(args: argparse.Namespace) -> int:
    """Log-likelihood per frame of a MIDI file under a trained model."""
    from rnnrbm.generation import read_run_info, score_midi

    model, _ = _load_music_model(args.checkpoint, args.device)
    opts = _midi_options(args, read_run_info(args.checkpoint))
    report = score_midi(
        model,
        args.file,
        options=opts,
        method=args.method,
        ais_runs=args.ais_runs,
        ais_betas=args.ais_betas,
        seed=args.seed,
    )
    res = {"command": "score", "checkpoint": args.checkpoint, **report.as_dict()}
    pm = f" ± {report.se:.3f}" if report.se > 0 else ""
    lines = [
        f"{args.file}: log-likelihood {report.mean:.4f}{pm} nats per frame "
        f"over {report.n_frames} frames ({report.estimator}); "
        f"transposed {report.transposition:+d} semitones"
    ]
    if args.per_frame:
        lines += [f"frame {t}: {v:.4f}" for t, v in enumerate(report.per_frame)]
    _emit(args, res, lines)
    return 0


# ----------------------------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    """The benchmark protocol on a split: NLL per frame ± s.e., estimator, frames, accuracy."""
    from rnnrbm.generation import load_music_data, read_run_info
    from rnnrbm.models import RBM

    start = time.perf_counter()
    model, _ = _load_music_model(args.checkpoint, args.device)
    data = load_music_data(args.data, options=_midi_options(args, read_run_info(args.checkpoint)))
    for f, reason in data.skipped:
        _note(args, f"skipped {f}: {reason}")
    ds = data.dataset
    if args.split not in ds.splits or not ds[args.split]:
        raise _user_error(
            "--split",
            f"a non-empty split of {args.data} ({', '.join(s for s in ds.splits if ds[s])})",
            repr(args.split),
            "pick one of those (a MIDI folder has train, valid and all)",
        )
    if isinstance(model, RBM):
        res = _evaluate_rbm(model, ds, args)
    else:
        from rnnrbm.evaluation import evaluate

        res = evaluate(
            model,
            ds,
            args.split,
            method=args.method,
            ais_runs=args.ais_runs,
            ais_betas=args.ais_betas,
            accuracy=args.accuracy_samples > 0,
            samples=max(args.accuracy_samples, 1),
            gibbs_steps=args.gibbs_steps,
            seed=args.seed,
        )
    res = {"command": "evaluate", "checkpoint": args.checkpoint, **res}
    res["seconds"] = round(time.perf_counter() - start, 2)
    nll = res["nll"]
    pm = f" ± {nll['se']:.3f}" if nll["se"] > 0 else ""
    lines = [
        f"{ds.name} {args.split}: NLL {nll['nll']:.3f}{pm} nats per frame over "
        f"{nll['n_frames']} frames ({nll['estimator']}){_runs_gap_text(nll)}"
    ]
    acc = res.get("accuracy")
    if acc:
        lines.append(
            f"frame accuracy {100 * acc['accuracy']:.2f}% ± {100 * acc['se']:.2f} "
            f"({acc['samples']} samples per frame, {acc['gibbs_steps']} Gibbs steps)"
        )
    _emit(args, res, lines)
    return 0


def _runs_gap_text(nll: dict[str, Any]) -> str:
    """How far the AIS figure moved when its runs doubled, and a warning when that is large."""
    gap = nll.get("runs_gap")
    if gap is None:
        return ""
    warning = "" if nll.get("converged", True) else " — AIS NOT converged, use more runs / β"
    return f"; doubling the runs moved it {gap:+.3f}{warning}"


def _evaluate_rbm(model: Any, ds: Any, args: argparse.Namespace) -> dict[str, Any]:
    """A plain RBM models frames independently: NLL per frame = −mean log p(v_t)."""
    method = args.method
    if method == "auto":
        method = "exact" if min(model.n_visible, model.n_hidden) <= 16 else "ais"
    x = torch.from_numpy(ds.frames(args.split)).to(model.device, next(model.parameters()).dtype)
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    with torch.no_grad():
        lp = model.log_likelihood(
            x, method, n_runs=args.ais_runs, n_betas=args.ais_betas, generator=gen
        )
    n = int(lp.value.numel())
    return {
        "dataset": ds.name,
        "split": args.split,
        "model": "rbm",
        "nll": {
            "nll": -float(lp.value.mean()),
            "se": float(lp.se[0]) if n else 0.0,  # one log Z shared by all frames
            "n_frames": n,
            "estimator": lp.estimator,
            "units": "nats per frame (summed over keys)",
        },
        "accuracy": None,
    }


# ----------------------------------------------------------------------------------- demo (music)
def _demo_threads(args: argparse.Namespace) -> int:
    """Threads for the demo's training: ``--threads``, else PyTorch's, else 1 on a busy machine.

    The RNN-RBM's products are small (≈ 16 × 60 frames × 88 × 150), so OpenMP threads that spin
    while another process holds a core lose badly: measured on 2 cores beside one busy process,
    a 30-s budget gave 1–22 epochs with 2 threads and 14 every time with 1 (idle: ~24 with 2).
    """
    if args.threads:
        return args.threads
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load >= 0.5:
        _note(args, f"the machine is busy (load {load:.1f}): training on 1 thread")
        return 1
    return threads


def cmd_demo(args: argparse.Namespace) -> int:
    """RNN-RBM on the bundled JSB Chorales, CPU only: train, evaluate, generate a piece."""
    from rnnrbm.checkpoint import save_checkpoint
    from rnnrbm.data.polyphonic import load_bundled_jsb
    from rnnrbm.evaluation import sequence_nll
    from rnnrbm.generation import generate_music
    from rnnrbm.plotting import save_curves
    from rnnrbm.recipes import train_sequence_model

    start = time.perf_counter()
    out = Path(args.out)
    torch.manual_seed(args.seed)
    eval_threads = torch.get_num_threads()
    train_threads = _demo_threads(args)
    torch.set_num_threads(train_threads)
    ds = load_bundled_jsb()
    model, result = train_sequence_model(
        "rnn-rbm",
        ds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        k=args.k,
        max_len=args.max_len or None,
        pretrain_epochs=args.pretrain_epochs,
        pretrain_lr=args.pretrain_lr,
        pretrain_k=args.pretrain_k,
        valid_every=args.valid_every,
        valid_ais_runs=args.valid_runs,
        valid_ais_betas=args.valid_betas,
        valid_frames=args.valid_frames or None,
        patience=None,
        restore_best=True,
        time_budget=args.time_budget or None,
        seed=args.seed,
        progress=not args.json,
        model_options={"n_hidden": args.hidden, "n_recurrent": args.recurrent, "device": "cpu"},
    )
    t_train = time.perf_counter() - start
    torch.set_num_threads(eval_threads)  # AIS runs its chunks on worker threads of its own
    t0 = time.perf_counter()
    report = sequence_nll(
        model,
        ds["test"],
        method="ais",
        ais_runs=args.ais_runs,
        ais_betas=args.ais_betas,
        generator=torch.Generator().manual_seed(args.seed),
        dataset="jsb",
        split="test",
    )
    t_eval = time.perf_counter() - t0
    piece = generate_music(
        model,
        out,
        steps=args.steps,
        gibbs_steps=args.gibbs_steps,
        seed=args.seed,
        frames_per_beat=1,  # JSB frames are quarter notes
        tempo_bpm=args.tempo,
        stem="chorale",
        synth="additive",
    )
    history = result.history
    # Polyphony of the piece next to the data's: the quickest check that sampling is healthy.
    notes_generated = float(piece.rolls[0].sum(-1).mean())
    notes_data = float(ds.frames("train").sum(-1).mean())
    paths = {k: str(v) for k, v in piece.paths[0].items()}
    curves = _history_curves(history)
    paths["curves"] = str(
        save_curves(curves, out / "loss.png", ylabel="nats", title="RNN-RBM on JSB Chorales")
    )
    paths["checkpoint"] = str(save_checkpoint(out / "rnn_rbm.safetensors", model))
    log = getattr(model, "recipe_log_", {})
    res = {
        "command": "demo",
        "dataset": "JSB Chorales (bundled): 229 train / 76 valid / 77 test, quarter-note frames",
        "model": model.config(),
        "pretrain_epochs": args.pretrain_epochs,
        "epochs": result.state.epoch,
        "best_epoch": log.get("best_epoch"),
        "valid_estimator": log.get("valid_estimator"),
        "test_nll": report.as_dict(),
        "paper_test_nll": 6.27,
        "notes_per_frame": {"generated": round(notes_generated, 2), "train": round(notes_data, 2)},
        "gibbs_steps": args.gibbs_steps,
        "history": history,
        "paths": paths,
        "timings_s": {"train": round(t_train, 1), "evaluate": round(t_eval, 1)},
        "threads": {"train": train_threads, "evaluate": eval_threads},
        "seconds": round(time.perf_counter() - start, 2),
    }
    _emit(
        args,
        res,
        [
            f"trained an RNN-RBM ({args.hidden} hidden, {args.recurrent} recurrent, CD-{args.k}) "
            f"on JSB Chorales: {args.pretrain_epochs} frame + {result.state.epoch} sequence "
            f"epochs in {t_train:.0f} s (best validation epoch {log.get('best_epoch')})",
            f"test NLL {report.nll:.3f} ± {report.se:.3f} nats per frame over {report.n_frames} "
            f"frames ({report.estimator}; an AIS estimate, which errs low with few runs or "
            f"β steps{_runs_gap_text(report.as_dict())}); the paper's RNN-RBM reaches 6.27 "
            "after hours of training",
            f"generated {args.steps} frames ({args.gibbs_steps} Gibbs steps each): "
            f"{notes_generated:.2f} notes per frame (training data: {notes_data:.2f})",
            *(f"wrote {k}: {v}" for k, v in paths.items()),
            f"done in {res['seconds']:.0f} s (training on {train_threads} thread(s), "
            f"evaluation {t_eval:.0f} s on {eval_threads})",
        ],
    )
    return 0


# ----------------------------------------------------------------------------------- demo (digits)
def cmd_demo_digits(args: argparse.Namespace) -> int:
    """RBM, DBN or DBM on the bundled 8×8 digits (or MNIST on disk): filter tiles, persistent
    sample chains and the test log-likelihood (``rnnrbm.image_demo.run_image_demo``)."""
    from rnnrbm.image_demo import run_image_demo

    torch.manual_seed(args.seed)
    res = run_image_demo(
        args.out,
        model=args.model,
        epochs=args.epochs,
        seed=args.seed,
        hidden=args.hidden,
        k=args.k,
        lr=args.lr,
        steps_per_row=args.steps_per_row,
        mnist_dir=args.mnist,
        n_train=args.n_train,
        n_test=args.n_test,
        evaluate=args.ais_runs > 0,
        ais_runs=max(args.ais_runs, 1),
        ais_betas=args.ais_betas,
        device=args.device,
        progress=not args.json,
    )
    res = {"command": "demo-digits", **res}
    fig = res["figures"]
    shape = "-".join(str(n) for n in res["layers"])
    lines = [f"trained a {args.model.upper()} {shape} on {res['dataset']}, {args.epochs} epochs"]
    if fig["test_log_likelihood"] is not None:
        lines.append(
            f"test log-likelihood {fig['test_log_likelihood']:.3f} ± "
            f"{fig['test_log_likelihood_se']:.3f} nats per image over {fig['n_test']} images "
            f"({fig['estimator']})"
        )
    lines += [f"wrote {k}: {v}" for k, v in res["paths"].items()]
    lines.append(f"done in {res['seconds']:.0f} s")
    _emit(args, res, lines)
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnrbm", description="Energy-based models of binary data and sequences."
    )
    parser.add_argument("--version", action="version", version=f"rnnrbm {rnnrbm.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object of results")
    common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env", parents=[common], help="versions, device and threads")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("train", parents=[common], help="train a music model")
    p.add_argument(
        "--model", choices=MUSIC_MODELS, help="the model (kept from the run on --resume)"
    )
    p.add_argument("--data", help=DATA_HELP)
    p.add_argument("--out", required=True, help="folder for checkpoints, run.json and curves.png")
    p.add_argument("--epochs", type=int, default=None, help="sequence epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences (rbm: frames) per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", default="adam", help="sgd | adam | … (default adam)")
    p.add_argument("--clip", type=float, default=10.0, help="gradient-norm clip (0: none)")
    p.add_argument(
        "--weight-decay", type=float, default=0.0, help="L2 on the weight matrices (default 0)"
    )
    p.add_argument(
        "--lr-decay",
        type=float,
        default=0.0,
        help="multiply the lr by this after --lr-patience validations without improvement "
        "(0: constant lr)",
    )
    p.add_argument("--lr-patience", type=int, default=2, help="see --lr-decay (default 2)")
    p.add_argument("--k", type=int, default=15, help="Gibbs steps of CD-k (default 15)")
    p.add_argument("--hidden", type=int, default=150, help="hidden units per frame (default 150)")
    p.add_argument("--recurrent", type=int, default=100, help="recurrent units (default 100)")
    p.add_argument(
        "--activation",
        choices=("sigmoid", "tanh"),
        default=None,
        help="the rnn-rbm / rnn-nade recurrence: sigmoid (the paper's; the default) or "
        "tanh (the deeplearning.net tutorial's)",
    )
    p.add_argument("--max-len", type=int, default=100, help="chunk length in frames (0: none)")
    p.add_argument(
        "--carry-state",
        action="store_true",
        help="chunks continue the recurrent state of their piece (default: each chunk resets it)",
    )
    p.add_argument("--pretrain-epochs", type=int, default=5, help="frame-only epochs first")
    p.add_argument(
        "--rnn-pretrain-epochs",
        type=int,
        default=0,
        help="then epochs of the recurrence alone on per-note cross-entropy (BL2012 §5; default 0)",
    )
    p.add_argument("--valid-every", type=int, default=1, help="epochs between validations")
    p.add_argument(
        "--valid-frames", type=int, default=2000, help="validate on ≤ this many frames (0: all)"
    )
    p.add_argument("--patience", type=int, default=10, help="early stopping (0: never)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly, with its run.json settings (--epochs may grow)",
    )
    _add_midi_flags(p, "MIDI training data")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", parents=[common], help="sample music from a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by `rnnrbm train`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--steps", type=int, default=None, help="frames (default 200; --clamp: its length)"
    )
    p.add_argument("--gibbs-steps", type=int, default=25, help="Gibbs steps per frame (25)")
    p.add_argument("--primer", help="a MIDI file, or a dataset sequence DATA[:SPLIT[:INDEX]]")
    p.add_argument("--primer-frames", type=int, default=None, help="first N primer frames")
    p.add_argument("--clamp", help="a melody MIDI file to harmonise (its notes are held fixed)")
    p.add_argument(
        "--melody-anywhere",
        action="store_true",
        help="let harmony notes go above the melody (default: the melody stays on top)",
    )
    p.add_argument("--n", type=int, default=1, help="number of pieces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mean-last",
        action="store_true",
        help="finish each frame with its mean (MIDI/WAV: keys ≥ 0.5; PNG: the probabilities)",
    )
    p.add_argument("--tempo", type=float, default=120.0, help="beats per minute of the output")
    p.add_argument("--name", default="sample", help="file stem (default: sample)")
    p.add_argument("--synth", choices=("auto", "additive", "fluidsynth"), default="auto")
    p.add_argument("--device", default="cpu")
    _add_midi_flags(p, "the primer and melody")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("score", parents=[common], help="log-likelihood per frame of a MIDI file")
    p.add_argument("checkpoint")
    p.add_argument("file", help="a MIDI file")
    p.add_argument("--method", choices=("auto", "exact", "ais"), default="auto")
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-betas", type=int, default=1000)
    p.add_argument("--per-frame", action="store_true", help="print every frame's value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    _add_midi_flags(p, "the file")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", parents=[common], help="benchmark protocol on a split")
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="test")
    p.add_argument("--method", choices=("auto", "exact", "ais"), default="auto")
    p.add_argument("--ais-runs", type=int, default=100, help="AIS chains per frame (100)")
    p.add_argument("--ais-betas", type=int, default=1000, help="AIS temperatures (1000)")
    p.add_argument("--accuracy-samples", type=int, default=20, help="0 skips frame accuracy")
    p.add_argument("--gibbs-steps", type=int, default=25, help="per accuracy sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    _add_midi_flags(p, "MIDI data")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", parents=[common], help="RNN-RBM on bundled JSB Chorales (CPU)")
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    # Training stops at the time budget (the epoch count is only a cap), so `make demo` stays
    # within ~2.5 min on 2 idle cores (94 epochs measured) and ≲ 4 min on a busy machine.
    p.add_argument("--epochs", type=int, default=300, help="sequence epochs at most (300)")
    p.add_argument(
        "--time-budget", type=float, default=120.0, help="training seconds at most (120; 0: none)"
    )
    p.add_argument("--pretrain-epochs", type=int, default=5, help="frame-RBM epochs (5)")
    p.add_argument("--pretrain-lr", type=float, default=1e-2)
    p.add_argument("--pretrain-k", type=int, default=1, help="CD-k of the frame pretraining")
    p.add_argument("--hidden", type=int, default=150)
    p.add_argument("--recurrent", type=int, default=100)
    p.add_argument("--k", type=int, default=15, help="CD-k of the sequence stage (15)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (3e-3)")
    p.add_argument("--batch-size", type=int, default=16, help="chorales per batch (16)")
    p.add_argument("--max-len", type=int, default=0, help="chunk length (0: whole chorales)")
    p.add_argument("--valid-every", type=int, default=2)
    p.add_argument("--valid-runs", type=int, default=8)
    p.add_argument("--valid-betas", type=int, default=100)
    p.add_argument("--valid-frames", type=int, default=1000)
    p.add_argument("--ais-runs", type=int, default=5, help="test AIS chains per frame (5)")
    p.add_argument("--ais-betas", type=int, default=1000, help="test AIS temperatures (1000)")
    p.add_argument("--steps", type=int, default=200, help="frames to generate (default 200)")
    p.add_argument("--gibbs-steps", type=int, default=25, help="Gibbs steps per frame (25)")
    p.add_argument("--tempo", type=float, default=90.0)
    p.add_argument("--threads", type=int, default=0, help="training threads (0: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "demo-digits", parents=[common], help="RBM / DBN / DBM on digits: filters and samples"
    )
    p.add_argument("--model", choices=("rbm", "dbn", "dbm"), default="rbm")
    p.add_argument("--out", default="demo-digits", help="output folder (default: demo-digits)")
    p.add_argument("--epochs", type=int, default=30, help="epochs (DBN/DBM: per layer too)")
    p.add_argument(
        "--hidden", type=int, nargs="+", default=None, help="units per layer (rbm 100; 100 100)"
    )
    p.add_argument("--k", type=int, default=None, help="Gibbs steps of PCD (default 5)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (rbm/dbn .05, dbm .02)")
    p.add_argument("--steps-per-row", type=int, default=100, help="Gibbs steps between rows")
    p.add_argument("--mnist", default=None, help="a folder with MNIST IDX files (no download)")
    p.add_argument("--n-train", type=int, default=None, help="first N training images only")
    p.add_argument("--n-test", type=int, default=None, help="first N test images only")
    p.add_argument("--ais-runs", type=int, default=100, help="AIS runs (0: no evaluation)")
    p.add_argument("--ais-betas", type=int, default=3000, help="AIS temperatures (3000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_digits)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the library wrote
        print(f"rnnrbm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnrbm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
