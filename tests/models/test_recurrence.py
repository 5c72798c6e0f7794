"""Bias recurrences: causality, padding, batched == looped, the paper's equations, gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from rnnrbm.core.estimators import NADEFrame, RBMFrame
from rnnrbm.models.recurrence import (
    BiasRecurrence,
    LSTMRecurrence,
    MeanFieldRecurrence,
    RNNRecurrence,
)
from rnnrbm.validation import InputError

F64 = torch.float64
N_V, N_H, N_U = 5, 4, 3


def _randomise(module: nn.Module, seed: int) -> None:
    """Every parameter (biases and initial states included) ~ N(0, 1): nothing is trivially 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def _rbm() -> RBMFrame:
    est = RBMFrame(N_V, N_H, dtype=F64)
    _randomise(est, 11)
    return est


def _nade() -> NADEFrame:
    est = NADEFrame(N_V, N_H, dtype=F64)
    _randomise(est, 12)
    return est


def _rnn(
    activation: str, gradient: str = "autograd"
) -> Callable[[], tuple[BiasRecurrence, object]]:
    def make() -> tuple[BiasRecurrence, object]:
        est = _rbm()
        rec = RNNRecurrence(
            N_V,
            N_U,
            est.offset_sizes,
            activation=activation,
            gradient=gradient,
            dtype=F64,  # type: ignore[arg-type]
        )
        _randomise(rec, 1)
        return rec, est

    return make


def _lstm(estimator: Callable[[], object]) -> Callable[[], tuple[BiasRecurrence, object]]:
    def make() -> tuple[BiasRecurrence, object]:
        est = estimator()
        rec = LSTMRecurrence(N_V, N_U, est.offset_sizes, dtype=F64)  # type: ignore[attr-defined]
        _randomise(rec, 2)
        return rec, est

    return make


def _mean_field(estimator: Callable[[], object], visible: bool = True):
    def make() -> tuple[BiasRecurrence, object]:
        est = estimator()
        rec = MeanFieldRecurrence(est.offset_sizes, visible_offsets=visible, dtype=F64)  # type: ignore[attr-defined]
        _randomise(rec, 3)
        return rec, est

    return make


RECURRENCES = {
    "rnn-tanh": _rnn("tanh"),
    "rnn-sigmoid": _rnn("sigmoid"),
    "rnn-tanh-direct-gradient": _rnn("tanh", "direct"),
    "rnn-sigmoid-direct-gradient": _rnn("sigmoid", "direct"),
    "lstm-rbm": _lstm(_rbm),
    "lstm-nade": _lstm(_nade),
    "mean-field-rbm": _mean_field(_rbm),
    "mean-field-nade": _mean_field(_nade),
    "mean-field-hidden-only": _mean_field(_rbm, visible=False),
}


def _rolls(B: int, T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N_V, generator=g) < 0.5).to(F64)


def _reference_loop(rec: BiasRecurrence, v: torch.Tensor, est) -> tuple[torch.Tensor, ...]:
    """The generic step()/offsets() loop of the base class (generation path)."""
    return BiasRecurrence.forward(rec, v, None, est)


@pytest.fixture(params=list(RECURRENCES))
def case(request) -> tuple[BiasRecurrence, object]:
    return RECURRENCES[request.param]()


def test_shapes_match_the_estimator(case) -> None:
    rec, est = case
    offs = rec(_rolls(3, 6), None, est)
    assert isinstance(offs, tuple) and len(offs) == len(est.offset_sizes)
    for o, size in zip(offs, est.offset_sizes, strict=True):
        assert o.shape == (3, 6, size) and o.dtype == F64


@pytest.mark.parametrize("t", [0, 2, 4])
def test_causality(case, t: int) -> None:
    """Changing frames v_t..v_T leaves the offsets at ≤ t untouched and changes those after."""
    rec, est = case
    v = _rolls(2, 6)
    w = v.clone()
    w[:, t:] = 1.0 - w[:, t:]
    a, b = rec(v, None, est), rec(w, None, est)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x[:, : t + 1], y[:, : t + 1])
    # visible offsets are zero by construction for the hidden-only RTRBM; the hidden ones move
    assert (a[-1][:, t + 1] - b[-1][:, t + 1]).abs().min() > 0


def test_batched_equals_looped_and_step_path(case) -> None:
    rec, est = case
    v = _rolls(4, 7, seed=1)
    batched = rec(v, None, est)
    for i in range(4):
        alone = rec(v[i : i + 1], None, est)
        for x, y in zip(batched, alone, strict=True):
            torch.testing.assert_close(x[i : i + 1], y, rtol=1e-12, atol=1e-12)
    # the fused forward equals the step()/offsets() loop used for generation
    for x, y in zip(batched, _reference_loop(rec, v, est), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_gradients_equal_those_of_the_step_path(case) -> None:
    """The fused passes (tanh kernel, σ via the tanh kernel, LSTM cell kernel) backpropagate as
    the plain step() loop: same parameter gradients for a random linear read-out."""
    rec, est = case
    v = _rolls(3, 6, seed=5)
    g = torch.Generator().manual_seed(6)

    def grads(offsets: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        weights = [torch.randn(o.shape, generator=g, dtype=F64) for o in offsets]
        loss = sum((w * o).sum() for w, o in zip(weights, offsets, strict=True))
        params = [*rec.parameters(), *est.parameters()]  # type: ignore[attr-defined]
        return torch.autograd.grad(loss, params, allow_unused=True)

    fused = grads(rec(v, None, est))
    g.manual_seed(6)
    looped = grads(_reference_loop(rec, v, est))
    for x, y in zip(fused, looped, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_padding_is_ignored_even_when_it_holds_nan(case) -> None:
    rec, est = case
    v = _rolls(3, 5, seed=2)
    lengths = [5, 3, 1]
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    padded = torch.where(mask[..., None], v, torch.full_like(v, float("nan")))
    offs = rec(padded, mask, est)
    for i, n in enumerate(lengths):
        alone = rec(v[i : i + 1, :n], None, est)
        for x, y in zip(offs, alone, strict=True):
            torch.testing.assert_close(x[i : i + 1, :n], y, rtol=1e-12, atol=1e-12)
    assert all(bool(torch.isfinite(o).all()) for o in offs)


def test_gradients_reach_every_parameter_and_the_initial_state(case) -> None:
    rec, est = case
    offs = rec(_rolls(2, 4), None, est)
    sum(o.pow(2).sum() for o in offs).backward()
    for name, p in rec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if isinstance(rec, MeanFieldRecurrence | LSTMRecurrence):  # ĥ(t): the estimator's W, b_h
        assert est.W.grad is not None and est.W.grad.abs().sum() > 0
        assert est.b_h.grad is not None and est.b_h.grad.abs().sum() > 0


def test_single_frame_sequences_use_the_initial_state(case) -> None:
    rec, est = case
    offs = rec(_rolls(2, 1), None, est)
    state = rec.initial_state(2)
    for x, y in zip(offs, rec.offsets(state, est), strict=True):
        torch.testing.assert_close(x[:, 0], y)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_rnn_follows_the_paper_equations(activation: str) -> None:
    """û(t) = act(W₂ v(t) + W₃ û(t−1) + b_û); Δb_v(t) = W_uv û(t−1), Δb_h(t) = W_uh û(t−1)."""
    rec, est = _rnn(activation)()
    act = torch.tanh if activation == "tanh" else torch.sigmoid
    W2, W3 = rec.rnn.weight_ih_l0, rec.rnn.weight_hh_l0
    b_u = rec.rnn.bias_ih_l0 + rec.rnn.bias_hh_l0
    W_uv, W_uh = rec.out.weight[:N_V], rec.out.weight[N_V:]
    v = _rolls(2, 5, seed=3)
    d_v, d_h = rec(v, None, est)
    u = rec.u0.expand(2, N_U)
    for t in range(5):
        torch.testing.assert_close(d_v[:, t], u @ W_uv.T)
        torch.testing.assert_close(d_h[:, t], u @ W_uh.T)
        u = act(v[:, t] @ W2.T + u @ W3.T + b_u)


def test_mean_field_follows_the_rtrbm_equations() -> None:
    """ĥ(t) = σ(W v(t) + b_h + W′ ĥ(t−1)); b_h(t) = b_h + W′ ĥ(t−1), b_v(t) = b_v + W″ ĥ(t−1)."""
    rec, est = _mean_field(_rbm)()
    W1, W2 = rec.out.weight[:N_V], rec.out.weight[N_V:]  # W″ and W′
    v = _rolls(2, 5, seed=4)
    d_v, d_h = rec(v, None, est)
    r = rec.r0.expand(2, N_H)
    for t in range(5):
        torch.testing.assert_close(d_v[:, t], r @ W1.T)
        torch.testing.assert_close(d_h[:, t], r @ W2.T)
        r = torch.sigmoid(v[:, t] @ est.W + est.b_h + r @ W2.T)
    hidden_only, est = _mean_field(_rbm, visible=False)()
    d_v, _ = hidden_only(v, None, est)
    assert torch.equal(d_v, torch.zeros_like(d_v))
    assert hidden_only.out.weight.shape == (N_H, N_H)


def test_lstm_follows_the_lstm_rtrbm_equations() -> None:
    """Lyu et al. 2015: the RTRBM path plus an LSTM reading ĥ(t), bypassing into the hidden
    biases: Δb_v(t) = W″ ĥ(t−1), Δb_h(t) = W′ ĥ(t−1) + W_L u(t−1); ĥ(t) = σ(W v(t) + b_h +
    Δb_h(t)); u(t), c(t) = LSTM(ĥ(t); u(t−1), c(t−1))."""
    rec, est = _lstm(_rbm)()
    W1, W2, W_L = rec.out.weight[:N_V], rec.out.weight[N_V:], rec.bypass.weight
    v = _rolls(2, 5, seed=4)
    d_v, d_h = rec(v, None, est)
    r, u, c = rec.r0.expand(2, N_H), rec.h0.expand(2, N_U), rec.c0.expand(2, N_U)
    cell = rec.lstm
    for t in range(5):
        torch.testing.assert_close(d_v[:, t], r @ W1.T)
        torch.testing.assert_close(d_h[:, t], r @ W2.T + u @ W_L.T)
        r = torch.sigmoid(v[:, t] @ est.W + est.b_h + d_h[:, t])
        gates = r @ cell.weight_ih.T + u @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        u = torch.sigmoid(o) * torch.tanh(c)
    assert rec.out.weight.shape == (N_V + N_H, N_H) and W_L.shape == (N_H, N_U)
    assert cell.weight_ih.shape == (4 * N_U, N_H)  # it reads ĥ, not v


def test_initialisation_is_seeded() -> None:
    def make(seed: int) -> RNNRecurrence:
        return RNNRecurrence(N_V, N_U, (N_V, N_H), generator=torch.Generator().manual_seed(seed))

    a, b, c = make(0), make(0), make(1)
    for (name, x), y, z in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
        if x.dim() == 2:
            assert not torch.equal(x, z), name
    assert torch.equal(a.u0, torch.zeros(N_U)) and torch.equal(a.rnn.bias_ih_l0, torch.zeros(N_U))


def test_errors_name_the_argument() -> None:
    with pytest.raises(InputError, match="activation: expected 'tanh' or 'sigmoid'"):
        RNNRecurrence(4, 3, (4, 2), activation="relu")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="offset_sizes: expected a non-empty tuple"):
        RNNRecurrence(4, 3, ())
    with pytest.raises(InputError, match="n_recurrent: expected an int ≥ 1"):
        LSTMRecurrence(4, 0, (4, 2))
    with pytest.raises(InputError, match=r"LSTMRecurrence offset_sizes: expected \(4, n_hidden\)"):
        LSTMRecurrence(4, 3, (5, 2))
    with pytest.raises(InputError, match=r"MeanFieldRecurrence offset_sizes: expected \(n_visible"):
        MeanFieldRecurrence((4,))
