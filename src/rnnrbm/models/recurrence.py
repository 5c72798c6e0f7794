"""Bias recurrences: read frames ``< t`` and emit the frame estimator's bias offsets at ``t``.

A temporal model (docs/design.md §1) is a recurrence + a frame estimator. The recurrence carries a
state ``s(t)`` that has read ``v(1..t)``; the offsets for frame ``t`` are a linear map of
``s(t−1)``, so they depend *only* on the past (causality) and ``s(0)`` is a learned initial
state (û(0) in Boulanger-Lewandowski, Bengio & Vincent 2012, "BL2012" below).

* :class:`RNNRecurrence` — RNN-RBM / RNN-NADE (BL2012 §3–4):
  ``û(t) = act(W₂ v(t) + W₃ û(t−1) + b_û)``, ``Δb_v(t) = W_uv û(t−1)``, ``Δb_h(t) = W_uh û(t−1)``.
* :class:`LSTMRecurrence` — LSTM-RTRBM (Lyu, Wu, Zhu & Meng 2015): the RTRBM recurrence below
  plus an LSTM that reads ``ĥ(t)`` and whose output ``u(t−1)`` is added to the hidden offsets
  (``Δb_h(t) = W′ ĥ(t−1) + W_L u(t−1)``, ``Δb_v(t) = W″ ĥ(t−1)``).
* :class:`MeanFieldRecurrence` — RTRBM (Sutskever, Hinton & Taylor 2009, as written in BL2012
  §3): ``ĥ(t) = σ(W v(t) + b_h(t))`` is the frame estimator's own mean-field hidden expectation
  *under its time-varying bias*, and ``b_h(t) = b_h + W′ ĥ(t−1)``, ``b_v(t) = b_v + W″ ĥ(t−1)``.
  BL2012 includes the visible term ``W″``; ``visible_offsets=False`` drops it (Δb_v = 0).

Speed (docs/design.md §6): the tanh RNN runs as one fused ``torch.nn.RNN`` call over ``(B, T)`` —
no Python loop over time — and the output map for every frame is ONE matmul over ``B·T`` rows;
the sigmoid RNN runs on the same fused tanh kernel (σ(a) = (1 + tanh(a/2))/2). The mean-field
and LSTM-RTRBM recurrences need a Python loop over ``t`` (batched over ``B``): ĥ(t) needs the
estimator.

Padding: sequences are right-padded (``data.batching.pad_sequences``). Padding frames are zeroed
before the recurrence reads them, so they can only affect offsets *at* padded positions, which
the sequence model discards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnrbm.core.contrastive import GRADIENTS
from rnnrbm.core.estimators import FrameEstimator
from rnnrbm.models.tanh_rnn import tanh_rnn
from rnnrbm.validation import InputError, check_choice, error_message

__all__ = ["BiasRecurrence", "LSTMRecurrence", "MeanFieldRecurrence", "RNNRecurrence"]

OffsetTuple = tuple[Tensor, ...]


def _init_(params: list[Tensor], std: float, generator: torch.Generator | None) -> None:
    """Matrices ~ N(0, std²) from ``generator`` (reproducible), vectors (biases) at zero."""
    with torch.no_grad():
        for p in params:
            if p.dim() >= 2:
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                p.copy_(noise.mul_(std))
            else:
                p.zero_()


class BiasRecurrence(nn.Module):
    """Base class: frames ``< t`` → offsets at ``t`` (docs/design.md §3).

    Subclasses define the state (``initial_state``, ``step``) and ``state_output`` (the vector
    the offsets are read from; or override ``offsets``). The output map is one bias-free linear
    layer whose output is split into ``offset_sizes`` (``(Δb_v, Δb_h)`` for RBM/NADE frames).
    ``forward`` here is the loop over ``offsets`` and ``step`` (each state's offsets computed
    once); the LSTM-RTRBM runs on it, the RNN and mean-field recurrences override it with fused
    versions.
    """

    offset_sizes: tuple[int, ...]
    out: nn.Linear

    def _make_output(
        self,
        n_state: int,
        offset_sizes: tuple[int, ...] | list[int],
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        self.offset_sizes = tuple(int(s) for s in offset_sizes)
        if not self.offset_sizes or any(s < 1 for s in self.offset_sizes):
            raise InputError(
                error_message(
                    "offset_sizes",
                    "a non-empty tuple of positive sizes (the estimator's offset_sizes)",
                    repr(offset_sizes),
                    "pass estimator.offset_sizes",
                )
            )
        self.out = nn.Linear(
            n_state, sum(self.offset_sizes), bias=False, dtype=dtype, device=device
        )

    # ---------------------------------------------------------------- state interface
    def initial_state(self, batch: int) -> Any:
        raise NotImplementedError

    def step(
        self,
        state: Any,
        v_t: Tensor,
        estimator: FrameEstimator,
        offsets: OffsetTuple | None = None,
    ) -> Any:
        """The state after reading frame ``v_t (B, n_v)``. ``offsets``: this state's offsets when
        the caller has them already (a recurrence that reads its estimator's hidden means under
        them then does not compute them twice)."""
        raise NotImplementedError

    def state_output(self, state: Any) -> Tensor:
        """The ``(B, n_state)`` vector the offsets are read from."""
        return state

    def offsets(self, state: Any, estimator: FrameEstimator | None = None) -> OffsetTuple:
        """Offsets for the next frame, each ``(B, size)``."""
        # F.linear, not self.out(...): the module call's hooks cost ~4 µs per generated frame.
        return self._split(F.linear(self.state_output(state), self.out.weight))

    def _split(self, y: Tensor) -> OffsetTuple:
        return tuple(torch.split(y, self.offset_sizes, dim=-1))

    # ---------------------------------------------------------------- whole sequences
    def forward(self, v: Tensor, mask: Tensor | None, estimator: FrameEstimator) -> OffsetTuple:
        """Offsets ``(B, T, size)`` for every frame of ``v (B, T, n_v)``; reference loop."""
        v = _zero_padding(v, mask)
        B, T, _ = v.shape
        state = self.initial_state(B)
        rows = []
        for t in range(T):
            offsets = self.offsets(state, estimator)
            rows.append(offsets)
            if t + 1 < T:
                state = self.step(state, v[:, t], estimator, offsets)
        return tuple(torch.stack(o, 1) for o in zip(*rows, strict=True))


def _zero_padding(v: Tensor, mask: Tensor | None) -> Tensor:
    # where(), not v * mask: a NaN/Inf in a padding frame must not leak (NaN · 0 = NaN).
    return v if mask is None else torch.where(mask.unsqueeze(-1), v, v.new_zeros(()))


def _check_sizes(**sizes: int) -> None:
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(error_message(name, "an int ≥ 1", repr(n), f"pass a positive {name}"))


class _FusedRecurrence(BiasRecurrence):
    """Set-up and ``forward`` of a recurrence kept in one fused ``nn.RNN`` (reads ``v(t)`` only)."""

    n_visible: int
    n_recurrent: int

    def __init__(self, n_visible: int, n_recurrent: int) -> None:
        super().__init__()
        _check_sizes(n_visible=n_visible, n_recurrent=n_recurrent)
        self.n_visible, self.n_recurrent = n_visible, n_recurrent

    def _output_and_init(
        self,
        core: nn.Module,
        offset_sizes: tuple[int, ...],
        init_std: float,
        generator: torch.Generator | None,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> None:
        """Add the output map, then draw the core's matrices and the map's from ``generator``."""
        self._make_output(self.n_recurrent, offset_sizes, dtype, device)
        _init_([*core.parameters(), self.out.weight], init_std, generator)

    def _offsets_after(
        self, v: Tensor, mask: Tensor | None, initial: Tensor, outputs: Callable[[Tensor], Tensor]
    ) -> OffsetTuple:
        """Offsets ``(B, T, size)``: frame 1 reads ``initial``, frame t the output after v(t−1)."""
        v = _zero_padding(v, mask)
        prev = initial.expand(v.shape[0], 1, self.n_recurrent)
        if v.shape[1] > 1:  # the state after v(T) is never used: read v(1..T−1) only
            prev = torch.cat([prev, outputs(v[:, :-1])], 1)
        return self._split(self.out(prev))


class RNNRecurrence(_FusedRecurrence):
    """RNN-RBM / RNN-NADE recurrence (BL2012 eqs. for ``û``, ``b_v(t)``, ``b_h(t)``).

    ``û(t) = act(W₂ v(t) + W₃ û(t−1) + b_û)`` with ``act`` ``"tanh"`` (the deeplearning.net
    tutorial) or ``"sigmoid"`` (the paper's σ; the default), both one fused kernel over ``t``. The
    weights live in ``self.rnn`` (``weight_ih_l0`` = W₂, ``weight_hh_l0`` = W₃, its two bias
    vectors sum to ``b_û``); ``u0`` is the learned initial state û(0); ``out`` stacks
    ``[W_uv; W_uh]``. Matrices start ~ N(0, init_std²), biases and û(0) at zero.

    ``gradient="direct"`` replaces autograd's replay of the recurrence by the hand-written backward
    pass of :mod:`rnnrbm.models.tanh_rnn` on the CPU (on CUDA the cuDNN kernel's own backward is
    used either way): faster per update at small batches, equal to autograd's gradient up to
    rounding, so seeded runs differ from ``"autograd"`` runs (the default, which every
    published figure used).
    """

    def __init__(
        self,
        n_visible: int,
        n_recurrent: int,
        offset_sizes: tuple[int, ...],
        *,
        activation: Literal["tanh", "sigmoid"] = "sigmoid",
        gradient: Literal["autograd", "direct"] = "autograd",
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(n_visible, n_recurrent)
        check_choice(activation, "activation", ("tanh", "sigmoid"))
        check_choice(gradient, "gradient", GRADIENTS)
        self.activation, self.gradient = activation, gradient
        self.rnn = nn.RNN(n_visible, n_recurrent, batch_first=True, dtype=dtype, device=device)
        self.u0 = nn.Parameter(torch.zeros(n_recurrent, dtype=dtype, device=device))
        self._output_and_init(self.rnn, offset_sizes, init_std, generator, dtype, device)

    def initial_state(self, batch: int) -> Tensor:
        return self.u0.expand(batch, self.n_recurrent)

    def step(
        self,
        state: Tensor,
        v_t: Tensor,
        estimator: FrameEstimator | None = None,
        offsets: OffsetTuple | None = None,
    ) -> Tensor:
        r = self.rnn
        if self.activation == "tanh":  # nn.RNNCell's fused kernel: one call (generation speed)
            return torch.rnn_tanh_cell(
                v_t, state, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0
            )
        pre = torch.addmm(r.bias_ih_l0 + r.bias_hh_l0, v_t, r.weight_ih_l0.T)
        return torch.sigmoid(pre.addmm_(state, r.weight_hh_l0.T))

    def states(self, v: Tensor) -> Tensor:
        """``û(1..T)`` for ``v (B, T, n_v)``, shape ``(B, T, n_recurrent)``."""
        r = self.rnn
        h0 = self.u0.expand(v.shape[0], self.n_recurrent)
        # the written-out pass gives the frames no gradient: autograd's where they need one
        direct = self.gradient == "direct" and v.device.type == "cpu" and not v.requires_grad
        if self.activation == "tanh":
            if direct:
                return tanh_rnn(v, h0, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
            return r(v, h0.unsqueeze(0).contiguous())[0]
        # σ(a) = (1 + tanh(a/2))/2, so s = 2û − 1 follows a *tanh* RNN: with û(t−1) = (1 + s)/2,
        # a(t)/2 = (W₂/2) v(t) + (W₃/4) s(t−1) + b_û/2 + (W₃/4)·1. One fused kernel (cuDNN on
        # CUDA) instead of a Python loop over t; autograd flows through the rescaled weights.
        w_ih, w_hh = r.weight_ih_l0 * 0.5, r.weight_hh_l0 * 0.25
        b_ih, b_hh = r.bias_ih_l0 * 0.5, r.bias_hh_l0 * 0.5 + w_hh.sum(1)
        s0 = h0 * 2 - 1
        if direct:
            s = tanh_rnn(v, s0, w_ih, w_hh, b_ih, b_hh)
        else:
            # (input, h0, weights, has_biases, layers, dropout, train, bidirectional, batch_first)
            weights = [w_ih, w_hh, b_ih, b_hh]
            s = torch.rnn_tanh(
                v, s0.unsqueeze(0), weights, True, 1, 0.0, self.training, False, True
            )[0]
        return s.mul(0.5).add_(0.5)

    def forward(
        self, v: Tensor, mask: Tensor | None, estimator: FrameEstimator | None = None
    ) -> OffsetTuple:
        """Offsets ``(B, T, size)``: frame ``t`` reads û(t−1) (û(0) = ``u0``)."""
        return self._offsets_after(v, mask, self.u0, self.states)


class LSTMRecurrence(BiasRecurrence):
    """LSTM-RTRBM recurrence (Lyu, Wu, Zhu & Meng 2015; Lyu, Wu & Zhu 2015, ACM MM p. 993): the
    RTRBM's recurrence (as :class:`MeanFieldRecurrence`) is *kept*, and an LSTM reaches the RBM
    through "bypass connections from LSTM units to the hidden units besides the existing
    recurrent connections of hidden units"::

        ĥ(t)       = estimator.hidden_mean(v(t), offsets(t))   (RBM: σ(W v(t) + b_h + Δb_h(t)))
        u(t), c(t) = LSTM(ĥ(t); u(t−1), c(t−1))               (reads ĥ(t): measured, below)
        Δb_v(t)    = W″ ĥ(t−1)                                 (the RTRBM's visible term, BL2012)
        Δb_h(t)    = W′ ĥ(t−1) + W_L u(t−1)                     (W_L: the bypass, hidden units only)

    Why this shape — measured 2026-12-03 on JSB, recipe ``jsb-lstm-rtrbm``, seed 0, validation
    NLL by forward AIS 10 × 300 on 1,500 frames (train NLL the same way on 1,500 train frames):

    * the earlier recurrence, an LSTM reading v(t) *in place of* the RTRBM path with
      ``Δb = W_out u(t−1)``, learnt fastest and then over-fitted: best 6.940 at epoch 35
      (train 6.25); the RTRBM recipe reaches 5.936 at epoch 230 (train 5.93; seed 1: 5.680).
      Keeping the RTRBM path with that LSTM still reading v(t): 6.984. Forget-gate bias 1:
      6.952; N(0, 0.1²) weights: 7.109 — so the LSTM is initialised like the rest.
    * the LSTM reading ĥ(t) beside the RTRBM path: 6.150 at epoch 110 (train 5.18) with the
      LSTM term in both biases; into the hidden biases only, as the paper has it, 5.889 at
      epoch 140 (a prototype with other initial draws) and 5.715 at epoch 160 (this class;
      train 5.04): level with the RTRBM within its spread over seeds, no longer a nat behind.

    ``out`` is ``[W″; W′]`` on ĥ(t−1) (the RTRBM's map), ``bypass`` is ``W_L`` on u(t−1),
    ``lstm`` the cell (``nn.LSTMCell``); ``r0``, ``h0``, ``c0`` are the learned ĥ(0), u(0), c(0)
    (zero at first); matrices ~ N(0, init_std²), biases zero. ĥ(t) needs the offsets at t, so
    ``forward`` is a Python loop over t (batched over B), as the RTRBM's.
    """

    def __init__(
        self,
        n_visible: int,
        n_recurrent: int,
        offset_sizes: tuple[int, ...],
        *,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(n_visible=n_visible, n_recurrent=n_recurrent)
        sizes = tuple(int(s) for s in offset_sizes)
        if len(sizes) != 2 or sizes[0] != n_visible or sizes[1] < 1:
            raise InputError(
                error_message(
                    "LSTMRecurrence offset_sizes",
                    f"({n_visible}, n_hidden) of an RBM or NADE frame estimator",
                    repr(offset_sizes),
                    "pass estimator.offset_sizes",
                )
            )
        self.n_visible, self.n_recurrent, self.n_hidden = n_visible, n_recurrent, sizes[1]
        n_h = self.n_hidden
        self.lstm = nn.LSTMCell(n_h, n_recurrent, dtype=dtype, device=device)
        self.r0 = nn.Parameter(torch.zeros(n_h, dtype=dtype, device=device))
        self.h0 = nn.Parameter(torch.zeros(n_recurrent, dtype=dtype, device=device))
        self.c0 = nn.Parameter(torch.zeros(n_recurrent, dtype=dtype, device=device))
        self._make_output(n_h, sizes, dtype, device)
        self.bypass = nn.Linear(n_recurrent, n_h, bias=False, dtype=dtype, device=device)
        _init_([*self.lstm.parameters(), self.out.weight, self.bypass.weight], init_std, generator)

    def initial_state(self, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.r0.expand(batch, self.n_hidden),
            self.h0.expand(batch, self.n_recurrent),
            self.c0.expand(batch, self.n_recurrent),
        )

    def offsets(
        self, state: tuple[Tensor, Tensor, Tensor], estimator: FrameEstimator | None = None
    ) -> OffsetTuple:
        d_v, d_h = self._split(F.linear(state[0], self.out.weight))
        return d_v, d_h + F.linear(state[1], self.bypass.weight)

    def _cell(self, r: Tensor, u: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One LSTM step reading ĥ ``r`` (the fused cell kernel, no module-call hooks)."""
        m = self.lstm
        return torch.lstm_cell(r, (u, c), m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)

    def step(
        self,
        state: tuple[Tensor, Tensor, Tensor],
        v_t: Tensor,
        estimator: FrameEstimator,
        offsets: OffsetTuple | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        offsets = self.offsets(state) if offsets is None else offsets
        r = estimator.hidden_mean(v_t, offsets)  # type: ignore[arg-type]
        return (r, *self._cell(r, state[1], state[2]))


class MeanFieldRecurrence(BiasRecurrence):
    """RTRBM recurrence: the state is the estimator's mean-field hidden expectation.

    ``r(t) = estimator.hidden_mean(v(t), offsets(t))`` — for an RBM frame
    ``σ(W v(t) + b_h + Δb_h(t))`` with the estimator's *own* ``W`` — and
    ``Δb_h(t) = W′ r(t−1)``, ``Δb_v(t) = W″ r(t−1)`` (``out`` stacks ``[W″; W′]``; with
    ``visible_offsets=False`` only ``W′`` exists and ``Δb_v = 0``). ``r0`` is the learned
    initial state. Gradients flow through ``r`` into ``W`` and the hidden bias (BPTT).

    ``r(t)`` needs the offsets at ``t``, so this runs a Python loop over ``t`` (batched over
    ``B``): one ``(B, n_h)·(n_h, n_v + n_h)`` matmul and one ``hidden_mean`` per frame.
    """

    def __init__(
        self,
        offset_sizes: tuple[int, ...],
        *,
        visible_offsets: bool = True,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in offset_sizes)
        if len(sizes) != 2:
            raise InputError(
                error_message(
                    "MeanFieldRecurrence offset_sizes",
                    "(n_visible, n_hidden) of an RBM or NADE frame estimator",
                    repr(offset_sizes),
                    "pass estimator.offset_sizes",
                )
            )
        self.n_visible, self.n_hidden = sizes
        self.visible_offsets = visible_offsets
        self.r0 = nn.Parameter(torch.zeros(self.n_hidden, dtype=dtype, device=device))
        self._make_output(self.n_hidden, sizes if visible_offsets else sizes[1:], dtype, device)
        self.offset_sizes = sizes  # what the estimator sees; `out` may omit Δb_v
        _init_([self.out.weight], init_std, generator)

    def _split(self, y: Tensor) -> OffsetTuple:
        if self.visible_offsets:
            return tuple(torch.split(y, self.offset_sizes, dim=-1))
        return (y.new_zeros((*y.shape[:-1], self.n_visible)), y)

    def initial_state(self, batch: int) -> Tensor:
        return self.r0.expand(batch, self.n_hidden)

    def step(
        self,
        state: Tensor,
        v_t: Tensor,
        estimator: FrameEstimator,
        offsets: OffsetTuple | None = None,
    ) -> Tensor:
        offsets = self.offsets(state) if offsets is None else offsets
        return estimator.hidden_mean(v_t, offsets)  # type: ignore[arg-type]

    def forward(self, v: Tensor, mask: Tensor | None, estimator: FrameEstimator) -> OffsetTuple:
        v = _zero_padding(v, mask)
        B, T, _ = v.shape
        r, ys = self.initial_state(B), []
        for t in range(T):
            y = self.out(r)
            ys.append(y)
            if t + 1 < T:
                r = estimator.hidden_mean(v[:, t], self._split(y))  # type: ignore[arg-type]
        return self._split(torch.stack(ys, 1))
