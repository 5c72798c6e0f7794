"""The benchmark protocol of Boulanger-Lewandowski, Bengio & Vincent (2012), docs/design.md §4.

**NLL per frame** = −(flat mean over *all* frames of all sequences, first frames included) of
``log p(v_t | v_<t)`` in nats summed over the 88 keys, with the frame count. Averaging per
sequence first is a different number (it weighs a short piece's frames more) and is not the
protocol; :func:`frame_log_probs` keeps the per-frame values so both can be computed.

* NADE frames (RNN-NADE): exact.
* RBM frames (RNN-RBM, RTRBM, LSTM-RTRBM): ``−F(v_t; b_t) − log Z(b_t)``; ``log Z`` is exact when
  ``core.partition.exact_is_affordable`` holds (rows = frames), otherwise by annealed importance
  sampling over every frame of every sequence, in keyed blocks of a few frames of one piece
  (``evaluation.blocks``: each block's chains are one cache-sized chunk with its own random stream,
  keyed by seed, piece and block, so the figures do not depend on how the blocks are grouped into
  calls or spread over ``torchrun`` ranks). The result is an *estimate* ± s.e.: AIS is unbiased for
  ``Z``, so it under-estimates ``log Z`` on average and the NLL it reports leans low (too good) when
  the runs or β steps are too few. The s.e. does not show that bias, so every AIS report also
  carries ``runs_gap``: the NLL minus the NLL from half of the runs. It is ≈ 0 once the estimate has
  converged (JSB RNN-RBMs: 20 → 100 runs moved the figure by +0.004); on a Nottingham RNN-RBM at
  1,000 β, 20 → 100 runs moved it by +0.31 against an s.e. of 0.007.

**AIS base model.** Each frame's chains start from a factorial Bernoulli ``p_A`` (W = 0) with
visible bias ``b_A(t)``; any ``b_A`` gives an unbiased ``Z``, but the closer ``p_A`` is to the
target, the smaller the variance and the bias of ``log Z``. The default ``ais_base="gibbs"`` uses
the frame RBM's own marginals: the mean of ``E[v | h]`` over ``GIBBS_BASE_CHAINS`` = 10 chains of
``GIBBS_BASE_STEPS`` = 50 block-Gibbs steps run with the frame's biases ``b(t)`` (the frames of an
AIS block together; smoothed by half a pseudo-count, logits clipped to ±9). This is Salakhutdinov &
Murray's (2008) base-rate model made per frame: it follows what the recurrence predicts for that
frame, where one data marginal for all frames (``"data"``) ignores the history. Measured on a CD-
trained JSB RNN-RBM (241 test frames): at 20 runs × 1,000 β the mean per-frame s.e. of ``log Z`` was
0.11 with ``"gibbs"``, 0.26 with ``"mean-field"`` (damped mean-field marginals — one mode only),
0.36 with ``"bias"`` (``b_v(t)``), 0.41 with ``"zero"`` (uniform); the ``"gibbs"`` estimate at 20 ×
1,000 exceeded every other base's at 100 × 1,000 (AIS errs low). The base costs ``10 × 50`` Gibbs
steps per frame, 0.5 % of 100 runs × 1,000 β.

**Frame accuracy** (Bay, Ehmann & Downie 2009, as used by BL2012 §6): for frame ``t`` and a
prediction ``v̂ ~ p(v_t | true v_<t)``, ``ACC = TP / (TP + FP + FN)`` over the 88 keys. The
expectation over ``samples`` draws per frame (≥ 20) is averaged over all frames (flat, as the
NLL). A frame whose truth *and* prediction are both silent has ``0 / 0``: by default
(``empty_frames="correct"``) it counts as 1 (a rest predicted as a rest); ``"exclude"`` drops
those (frame, draw) pairs from the average instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnrbm.core.estimators import NADEFrame, RBMFrame
from rnnrbm.core.partition import base_rate_visible_bias, exact_is_affordable
from rnnrbm.data.batching import pad_sequences
from rnnrbm.data.polyphonic import PolyphonicDataset
from rnnrbm.evaluation.blocks import (
    Block,
    blocks_of,
    frames_per_block,
    gather,
    generator_for,
    groups,
    my_share,
    rows_of,
    stream_seed,
)
from rnnrbm.validation import (
    InputError,
    InputTypeError,
    check_choice,
    check_positive_int,
    error_message,
)

__all__ = [
    "METHODS",
    "AISBase",
    "AccuracyReport",
    "FrameLogProbs",
    "Method",
    "NLLReport",
    "accuracy_per_frame",
    "ais_base_bias",
    "evaluate",
    "frame_accuracy",
    "frame_log_probs",
    "likelihood_interval",
    "note_one_gram_log_likelihood",
    "random_log_likelihood",
    "sequence_nll",
    "teacher_forced_frames",
]

ONE_GRAM_CLAMP = 1e-6
BASE_LOGIT_LIMIT = 9.0  # |b_A| ≤ 9: marginals in [1.2e-4, 1 − 1.2e-4], every state reachable
MEAN_FIELD_SWEEPS = 20
GIBBS_BASE_CHAINS = 10
GIBBS_BASE_STEPS = 50

AISBase = Literal["gibbs", "mean-field", "bias", "data", "zero"]
Method = Literal["auto", "exact", "ais", "raise"]
# "ais": forward AIS (optimistic NLL); "raise": reverse AIS from each frame (conservative NLL).
METHODS: tuple[Method, ...] = ("auto", "exact", "ais", "raise")


# ------------------------------------------------------------------------------------ reports
@dataclass(frozen=True)
class NLLReport:
    """One protocol figure: ``nll`` nats per frame (± ``se``), how it was estimated, on what."""

    nll: float
    se: float
    n_frames: int
    estimator: str
    dataset: str = ""
    split: str = "test"
    n_sequences: int = 0
    seconds: float = 0.0
    # AIS only: this NLL minus the NLL from half of the runs (mean of both halves) — how far the
    # figure moved when the runs doubled. AIS NLLs err low and rise as runs grow (the bias of a
    # log-mean-exp falls ~1/M), so this is also a first-order guess of the bias left; ≈ 0 when
    # converged. The standard error does not show this bias.
    runs_gap: float | None = None

    def as_dict(self) -> dict[str, object]:
        units = "nats per frame (summed over keys)"
        return {**asdict(self), "converged": self.converged, "units": units}

    @property
    def converged(self) -> bool:
        """False when doubling the AIS runs moved the NLL by > max(3 s.e., 0.01 nats) (up for
        forward AIS, whose NLL rises with the runs; either way for RAISE, whose NLL falls)."""
        if self.runs_gap is None:
            return True
        moved = abs(self.runs_gap) if self.estimator.startswith("raise") else self.runs_gap
        return moved <= max(3 * self.se, 0.01)

    def __str__(self) -> str:
        pm = f" ± {self.se:.3f}" if self.se > 0 else ""
        text = (
            f"{self.dataset} {self.split}: NLL {self.nll:.3f}{pm} nats/frame "
            f"over {self.n_frames} frames ({self.estimator})"
        )
        if self.runs_gap is not None:
            text += f"; doubling the runs moved it {self.runs_gap:+.3f}"
            if not self.converged:
                text += " — AIS NOT converged: the true NLL is likely higher; use more runs / β"
        return text


@dataclass(frozen=True)
class AccuracyReport:
    """Expected frame accuracy (Bay et al. 2009) ± its s.e. over frames; see the module doc."""

    accuracy: float
    se: float
    n_frames: int
    samples: int
    gibbs_steps: int
    empty_frames: str
    dataset: str = ""
    split: str = "test"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "definition": "mean over frames of E[TP / (TP + FP + FN)]"}

    def __str__(self) -> str:
        return (
            f"{self.dataset} {self.split}: frame accuracy {100 * self.accuracy:.2f}% "
            f"± {100 * self.se:.2f} over {self.n_frames} frames ({self.samples} samples/frame, "
            f"{self.gibbs_steps} Gibbs steps, both-empty frames: {self.empty_frames})"
        )


class FrameLogProbs(NamedTuple):
    """``log p(v_t | v_<t)`` of every real frame, in sequence-then-time order.

    ``value (N,)`` and ``se (N,)`` float64 nats (``se`` 0 when exact); ``lengths`` frames per
    sequence (``sum == N``); ``estimator`` how they were computed."""

    value: Tensor
    se: Tensor
    lengths: list[int]
    estimator: str
    value_half_runs: Tensor | None = None  # AIS: log p with log Z from half of the runs

    def per_sequence_mean(self) -> Tensor:
        """Mean log-probability of each sequence ``(S,)`` — NOT the protocol (see module doc)."""
        return torch.stack([c.mean() for c in torch.split(self.value, self.lengths)])


# ------------------------------------------------------------------------------------ baselines
def note_one_gram_log_likelihood(
    train_frames: np.ndarray, test_frames: np.ndarray, *, clamp: float = ONE_GRAM_CLAMP
) -> float:
    """Mean log-likelihood per test frame of independent per-key Bernoullis fitted on training
    frames (the paper's "Note 1-Gram" row).

    Keys never played in training would give −∞ under plain maximum likelihood (JSB, Nottingham
    and MuseData test sets contain such notes), so ``p`` is clamped to ``[clamp, 1 − clamp]``;
    any clamp from 1e−12 to 1e−4 reproduces the published −11.05 / −10.25 / −11.51 / −11.06
    (Piano-midi.de / Nottingham / MuseData / JSB) to two decimals.
    """
    p = np.clip(np.asarray(train_frames, dtype=np.float64).mean(0), clamp, 1.0 - clamp)
    x = np.asarray(test_frames, dtype=np.float64)
    log_p = x @ np.log(p) + (1.0 - x) @ np.log1p(-p)
    return float(log_p.mean())


def random_log_likelihood(n_keys: int = 88) -> float:
    """Every key on with probability ½: ``n_keys · ln ½`` (−61.00 for 88 keys)."""
    return n_keys * math.log(0.5)


# ------------------------------------------------------------------------------------ frames
def _check_rolls(model: Any, rolls: Any) -> list[Any]:
    if not hasattr(model, "frame_inputs") or not hasattr(model, "estimator"):
        raise InputTypeError(
            error_message(
                "model",
                "a temporal SequenceModel (rnn-rbm, rtrbm, lstm-rtrbm, rnn-nade)",
                type(model).__name__,
                "build one with build_sequence_model or load a checkpoint",
            )
        )
    if isinstance(rolls, np.ndarray | Tensor) or not isinstance(rolls, Sequence) or not rolls:
        raise InputError(
            error_message(
                "rolls",
                "a non-empty list of (T, n_visible) piano rolls",
                type(rolls).__name__ if not isinstance(rolls, list) else "an empty list",
                "pass dataset['test'] (one array per sequence)",
            )
        )
    n_v = model.n_visible
    rolls = list(rolls)  # once: a corpus split decodes each piece on access
    for i, r in enumerate(rolls):
        shape = tuple(getattr(r, "shape", ()))
        if len(shape) != 2 or shape[0] < 1 or shape[1] != n_v:
            raise InputError(
                error_message(
                    f"rolls[{i}]",
                    f"a (T ≥ 1, {n_v}) roll",
                    f"shape {shape}" if shape else type(r).__name__,
                    "pass one 2-D (time, keys) array per sequence",
                )
            )
    return rolls


@torch.no_grad()
def teacher_forced_frames(
    model: Any, rolls: Sequence[Any], *, batch_size: int = 64
) -> tuple[Tensor, tuple[Tensor, ...], list[int]]:
    """Every real frame and its offsets given the *true* history, stacked for one estimator call.

    Returns ``(v (N, n_v), offsets ((N, size), …), lengths)`` with frames in sequence-then-time
    order. The recurrence runs over ``batch_size`` sequences at a time (memory), without grad.
    """
    rolls = _check_rolls(model, rolls)
    batch_size = check_positive_int(batch_size, "batch_size")
    p = next(model.parameters())
    vs: list[Tensor] = []
    offs: list[tuple[Tensor, ...]] = []
    for i in range(0, len(rolls), batch_size):
        batch = pad_sequences(rolls[i : i + batch_size], dtype=p.dtype, device=p.device)
        v, o, _ = model.frame_inputs(batch)
        vs.append(v)
        offs.append(o)
    offsets = tuple(torch.cat(parts) for parts in zip(*offs, strict=True))
    return torch.cat(vs), offsets, [int(r.shape[0]) for r in rolls]


def _method(est: Any, n_rows: int, method: str) -> str:
    if check_choice(method, "method", METHODS) != "auto":
        return method
    if isinstance(est, RBMFrame):
        gaussian = est.visible == "gaussian"
        small = exact_is_affordable(est.n_visible, est.n_hidden, n_rows, gaussian=gaussian)
        return "exact" if small else "ais"
    return "exact"  # NADE and any other normalised estimator


@torch.no_grad()
def ais_base_bias(
    estimator: RBMFrame,
    offsets: tuple[Tensor, ...] | None,
    base: AISBase | Tensor = "gibbs",
    *,
    data: Any = None,
    sweeps: int = MEAN_FIELD_SWEEPS,
    chains: int = GIBBS_BASE_CHAINS,
    steps: int = GIBBS_BASE_STEPS,
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """Visible bias ``b_A`` of the AIS base model, ``(N, n_v)`` per frame or ``(n_v,)``.

    ``"gibbs"``: logits of the frame RBM's marginals estimated by ``chains`` Gibbs chains of
    ``steps`` steps per frame (module doc; random draws from ``generator``);
    ``"mean-field"``: logits of each frame's damped mean-field marginals (``sweeps`` sweeps of
    ``m ← ½ m + ½ σ(b_v + W σ(b_h + Wᵀ m))`` from ``σ(b_v)``; one mode only);
    ``"bias"``: the frame's own visible bias ``b_v + Δb_v(t)`` (the target with W removed);
    ``"data"``: ``core.partition.base_rate_visible_bias(data)`` (one bias for all frames; pass
    the training frames as ``data``); ``"zero"``: ``None`` (uniform base). A tensor is returned
    as given. Logits are clipped to ``±9`` so the base reaches every state.
    """
    if isinstance(base, Tensor):
        return base
    b_v, b_h = estimator.biases(offsets)
    if base == "zero":
        return None
    if base == "data":
        if data is None:
            raise InputError(
                error_message(
                    "ais_base='data'",
                    "the training frames as base_data",
                    "None",
                    "pass base_data=dataset.frames('train') or use ais_base='mean-field'",
                )
            )
        x = torch.as_tensor(np.asarray(data), dtype=torch.float64)
        return base_rate_visible_bias(x).to(b_v.dtype)
    if base == "bias":
        return b_v.clamp(-BASE_LOGIT_LIMIT, BASE_LOGIT_LIMIT)
    if base == "gibbs":
        chains = check_positive_int(chains, "chains")
        if offsets is None:
            p = estimator.expected_visible(None, steps, generator, n=chains).mean(0)
        else:
            rows = offsets[0].shape[0]
            repeated = tuple(o.repeat_interleave(chains, 0) for o in offsets)
            p = estimator.expected_visible(repeated, steps, generator)
            p = p.reshape(rows, chains, -1).mean(1)
        p = (p * chains + 0.5) / (chains + 1.0)  # half a pseudo-count: no infinite logits
        return torch.logit(p).clamp(-BASE_LOGIT_LIMIT, BASE_LOGIT_LIMIT)
    if base != "mean-field":
        raise InputError(
            error_message(
                "ais_base",
                "'gibbs', 'mean-field', 'bias', 'data', 'zero' or a (N, n_v) tensor",
                repr(base),
                "pick one",
            )
        )
    W = estimator.W
    m = torch.sigmoid(b_v)
    for _ in range(sweeps):  # damped: plain fixed-point iteration can oscillate between modes
        mu_h = torch.sigmoid(b_h + m @ W)
        m = 0.5 * m + 0.5 * torch.sigmoid(b_v + mu_h @ W.T)
    return torch.logit(m).clamp(-BASE_LOGIT_LIMIT, BASE_LOGIT_LIMIT)


def frame_log_probs(
    model: Any,
    rolls: Sequence[Any],
    *,
    method: Method = "auto",
    ais_runs: int = 100,
    ais_betas: int = 1000,
    ais_base: AISBase | Tensor = "gibbs",
    base_data: Any = None,
    batch_size: int = 64,
    frame_chunk: int = 2048,
    seed: int = 0,
    blocks_per_call: int | None = None,
) -> FrameLogProbs:
    """``log p(v_t | v_<t)`` for every real frame of ``rolls`` (see :class:`FrameLogProbs`).

    RBM frames with ``method="ais"``/``"raise"`` run forward/reverse AIS (``ais_runs`` chains
    per frame, ``ais_betas`` β steps, base from :func:`ais_base_bias`) in keyed blocks
    (``evaluation.blocks``): a frame's estimate depends on ``seed`` and the settings only, not on
    ``blocks_per_call`` (how many blocks share one call: memory and threads) nor on the number
    of ``torchrun`` ranks, which split the blocks and gather the results. Exact estimators are
    evaluated ``frame_chunk`` frames at a time on every rank (NADE's teacher-forced pass holds
    ``frame_chunk × n_v × n_h`` numbers).
    """
    v, offsets, lengths = teacher_forced_frames(model, rolls, batch_size=batch_size)
    est = model.estimator
    how = _method(est, v.shape[0], method)
    if how in ("ais", "raise") and isinstance(est, NADEFrame):
        how = "exact"  # normalised: an AIS bound would return the exact value anyway
    elif how in ("ais", "raise") and not isinstance(est, RBMFrame):
        raise InputError(
            error_message(
                f"method={how!r}", "an RBM frame estimator", type(est).__name__, "use 'exact'"
            )
        )
    with torch.no_grad():
        if how in ("ais", "raise"):
            check_positive_int(ais_runs, "ais_runs", minimum=2)
            check_positive_int(ais_betas, "ais_betas")
            runs = dict(n_runs=ais_runs, n_betas=ais_betas)
            blocks = blocks_of(lengths, frames_per_block(ais_runs, v.device))
            parts = []
            for group in groups(my_share(blocks), blocks_per_call):
                rows = rows_of(group, v.device)
                off = tuple(o[rows] for o in offsets)
                b_a = _block_bases(est, off, rows, group, ais_base, base_data, seed)
                streams = [(b.frames, stream_seed(seed, how, b)) for b in group]
                lp = est.log_prob(v[rows], off, how, **runs, base_visible_bias=b_a, streams=streams)
                packed = torch.stack([lp.value, lp.se, lp.value_half_runs], 1)  # type: ignore[list-item]
                parts += zip(group, packed.split([b.frames for b in group]), strict=True)
            value, se, half = gather(parts, v.shape[0]).unbind(1)
            base_name = "tensor" if isinstance(ais_base, Tensor) else ais_base
            estimator = f"{how}(runs={ais_runs}, betas={ais_betas}, base={base_name})"
        else:
            frame_chunk = check_positive_int(frame_chunk, "frame_chunk")
            chunks = [
                est.log_prob(v[i : i + frame_chunk], tuple(o[i : i + frame_chunk] for o in offsets))
                for i in range(0, v.shape[0], frame_chunk)
            ]
            value = torch.cat([p.value for p in chunks])
            se = torch.cat([p.se for p in chunks])
            estimator, half = "exact", None
    half = None if half is None else half.double().cpu()
    return FrameLogProbs(value.double().cpu(), se.double().cpu(), lengths, estimator, half)


def _block_bases(
    est: RBMFrame,
    offsets: tuple[Tensor, ...],
    rows: Tensor,
    group: Sequence[Block],
    base: AISBase | Tensor,
    data: Any,
    seed: int,
) -> Tensor | None:
    """The AIS base of every frame of ``group``, block by block (its own stream and products)."""
    if isinstance(base, Tensor):
        return base[rows.to(base.device)] if base.dim() == 2 else base
    if base in ("zero", "data"):  # no per-frame product, no randomness
        return ais_base_bias(est, offsets, base, data=data)
    parts, a = [], 0
    for b in group:
        off = tuple(o[a : a + b.frames] for o in offsets)
        gen = generator_for(seed, "base", b, rows.device) if base == "gibbs" else None
        parts.append(ais_base_bias(est, off, base, generator=gen))
        a += b.frames
    return torch.cat(parts)  # type: ignore[arg-type]


def sequence_nll(
    model: Any,
    rolls: Sequence[Any],
    *,
    method: Method = "auto",
    ais_runs: int = 100,
    ais_betas: int = 1000,
    ais_base: AISBase | Tensor = "gibbs",
    base_data: Any = None,
    batch_size: int = 64,
    seed: int = 0,
    blocks_per_call: int | None = None,
    dataset: str = "",
    split: str = "test",
) -> NLLReport:
    """The protocol's NLL per frame of ``model`` on ``rolls`` (a list of ``(T_i, 88)`` rolls).

    ``nll = −Σ_t log p(v_t | v_<t) / N`` over all ``N`` frames of all sequences (flat), nats.
    ``method="auto"``: exact for NADE, and for RBM frames when
    ``core.partition.exact_is_affordable`` holds (rows = ``N``), AIS otherwise. With AIS the
    per-frame ``log Z`` errors are independent across frames, so ``se = sqrt(Σ_t se_t²) / N``.
    Random draws are keyed by ``(seed, piece, frame block)`` (:func:`frame_log_probs`).
    """
    t0 = time.perf_counter()
    lp = frame_log_probs(
        model,
        rolls,
        method=method,
        ais_runs=ais_runs,
        ais_betas=ais_betas,
        ais_base=ais_base,
        base_data=base_data,
        batch_size=batch_size,
        seed=seed,
        blocks_per_call=blocks_per_call,
    )
    n = lp.value.numel()
    nll = -float(lp.value.sum()) / n
    se = float(lp.se.pow(2).sum().sqrt()) / n
    if not math.isfinite(nll):
        raise InputError(
            error_message(
                "sequence_nll",
                "a finite log-likelihood",
                f"{nll} (the model gives probability 0 to a test frame, or AIS diverged)",
                "check the model's parameters for NaN/Inf; use more AIS β steps",
            )
        )
    gap = None
    if lp.value_half_runs is not None:
        gap = float((lp.value_half_runs - lp.value).sum()) / n
    return NLLReport(
        nll, se, n, lp.estimator, dataset, split, len(lp.lengths), time.perf_counter() - t0, gap
    )


# ------------------------------------------------------------------------------------ accuracy
def accuracy_per_frame(
    truth: Tensor, pred: Tensor, empty_frames: Literal["correct", "exclude"] = "correct"
) -> Tensor:
    """``TP / (TP + FP + FN)`` per row of ``(…, n)`` binary tensors (float64).

    Rows where both are all-zero give 1 (``"correct"``) or NaN (``"exclude"``)."""
    t, p = truth.bool(), pred.bool()
    tp = (t & p).sum(-1).double()
    union = (t | p).sum(-1).double()  # TP + FP + FN
    empty = 1.0 if empty_frames == "correct" else math.nan
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, empty))


def frame_accuracy(
    model: Any,
    rolls: Sequence[Any],
    *,
    samples: int = 20,
    gibbs_steps: int = 25,
    empty_frames: Literal["correct", "exclude"] = "correct",
    batch_size: int = 64,
    seed: int = 0,
    dataset: str = "",
    split: str = "test",
) -> AccuracyReport:
    """Expected frame accuracy given the true history (Bay et al. 2009; module doc).

    Every frame gets ``samples`` predictions (RBM: ``gibbs_steps`` block-Gibbs steps from the
    empty frame, as in generation, with the frame's teacher-forced biases; NADE: an exact
    ancestral draw), drawn in keyed blocks (``evaluation.blocks``: the figure depends on ``seed``
    alone, whatever the number of ``torchrun`` ranks). ``accuracy`` is the mean over frames of
    the per-frame mean over draws; ``se`` is the s.e. of that mean over frames.
    """
    check_choice(empty_frames, "empty_frames", ("correct", "exclude"))
    samples = check_positive_int(samples, "samples")
    gibbs_steps = check_positive_int(gibbs_steps, "gibbs_steps", minimum=0)
    t0 = time.perf_counter()
    v, offsets, lengths = teacher_forced_frames(model, rolls, batch_size=batch_size)
    est = model.estimator
    parts = []
    with torch.no_grad():
        for b in my_share(blocks_of(lengths, frames_per_block(samples, v.device))):
            truth = v[b.start : b.stop].repeat(samples, 1)  # draw-major: row s·F + f
            off = tuple(o[b.start : b.stop].repeat(samples, 1) for o in offsets)
            silence = torch.zeros_like(truth)  # every chain starts from the empty frame
            pred = est.sample(
                off, gibbs_steps, generator_for(seed, "accuracy", b, v.device), v0=silence
            )
            acc = accuracy_per_frame(truth, pred, empty_frames).reshape(samples, b.frames)
            ok = ~torch.isnan(acc)
            parts.append(
                (b, torch.stack([torch.where(ok, acc, 0.0).sum(0), ok.sum(0).double()], 1))
            )
    total, count = gather(parts, v.shape[0]).unbind(1)
    defined = count > 0
    per_frame = total[defined] / count[defined]
    n = int(per_frame.numel())
    mean = float(per_frame.mean()) if n else math.nan
    se = float(per_frame.std() / math.sqrt(n)) if n > 1 else 0.0
    return AccuracyReport(
        mean,
        se,
        n,
        samples,
        gibbs_steps if isinstance(est, RBMFrame) else 0,
        empty_frames,
        dataset,
        split,
        time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------ together
def _check_dataset(dataset: Any) -> PolyphonicDataset:
    """``dataset`` when it is a ``PolyphonicDataset``, else the user error naming the fix."""
    if not isinstance(dataset, PolyphonicDataset):
        raise InputTypeError(
            error_message(
                "dataset",
                "a PolyphonicDataset",
                type(dataset).__name__,
                "load it with rnnrbm.data.polyphonic.load_polyphonic",
            )
        )
    return dataset


def evaluate(
    model: Any,
    dataset: PolyphonicDataset,
    split: str = "test",
    *,
    method: Method = "auto",
    ais_runs: int = 100,
    ais_betas: int = 1000,
    ais_base: AISBase = "gibbs",
    accuracy: bool = True,
    samples: int = 20,
    gibbs_steps: int = 25,
    empty_frames: Literal["correct", "exclude"] = "correct",
    batch_size: int = 64,
    seed: int = 0,
    conservative: bool = True,
) -> dict[str, Any]:
    """NLL per frame and (optionally) frame accuracy of ``model`` on ``dataset[split]``.

    Returns a JSON-able dict: ``{"dataset", "split", "model", "nll": NLLReport.as_dict(),
    "nll_conservative": NLLReport.as_dict() | None, "interval": … | None, "accuracy":
    AccuracyReport.as_dict() | None, "settings": {...}}``. When the NLL is a forward-AIS
    estimate (optimistic in expectation) and ``conservative``, the same frames are also
    estimated by RAISE (conservative; same runs, β schedule and base) and ``interval`` gives
    both ends and their gap. Random draws are keyed by ``(seed, stream, piece, frame block)``
    (``evaluation.blocks``): forward AIS, RAISE and accuracy get independent streams, and the
    figures are the same in one process and under ``torchrun`` with any number of ranks.
    """
    rolls = _check_dataset(dataset)[split]
    base_data = dataset.frames("train") if ais_base == "data" else None
    # Each estimate gets its own settings; the report lists the settings passed.
    nll_settings = dict(method=method, ais_runs=ais_runs, ais_betas=ais_betas, ais_base=ais_base)
    acc_settings = dict(samples=samples, gibbs_steps=gibbs_steps, empty_frames=empty_frames)
    shared = dict(batch_size=batch_size, seed=seed, dataset=dataset.name, split=split)
    nll = sequence_nll(model, rolls, **nll_settings, base_data=base_data, **shared)
    upper = None
    if conservative and nll.estimator.startswith("ais"):
        raise_settings = {**nll_settings, "method": "raise"}
        upper = sequence_nll(model, rolls, **raise_settings, base_data=base_data, **shared)
    acc = None
    if accuracy:
        acc = frame_accuracy(model, rolls, **acc_settings, **shared)
    return {
        "dataset": dataset.name,
        "split": split,
        "model": getattr(model, "model_type", type(model).__name__),
        "nll": nll.as_dict(),
        "nll_conservative": None if upper is None else upper.as_dict(),
        "interval": None if upper is None else likelihood_interval(nll, upper),
        "accuracy": None if acc is None else acc.as_dict(),
        "settings": {**nll_settings, **acc_settings, "seed": seed},
    }


def likelihood_interval(optimistic: NLLReport, conservative: NLLReport) -> dict[str, Any]:
    """Both ends of the NLL: forward AIS (low in expectation) and RAISE (high in expectation),
    the gap between them, and whether it is tight (≤ max(3 combined s.e., 0.01 nats))."""
    gap = conservative.nll - optimistic.nll
    se = math.hypot(optimistic.se, conservative.se)
    return {
        "optimistic": optimistic.nll,
        "conservative": conservative.nll,
        "gap": gap,
        "tight": abs(gap) <= max(3 * se, 0.01),
        "estimators": [optimistic.estimator, conservative.estimator],
        "units": "nats per frame (summed over keys)",
    }
