"""LSTM-RTRBM against a hand-written, fully enumerated model (4 visible, 3 hidden, 3 LSTM units).

The oracle below re-derives the model of Lyu et al. (2015) from its equations only — the RTRBM's
mean-field ``ĥ(t) = σ(W v(t) + b_h(t))``, the LSTM cell written out gate by gate reading ĥ(t),
the bias map ``b_v(t) = b_v + W″ ĥ(t−1)``, ``b_h(t) = b_h + W′ ĥ(t−1) + W_L u(t−1)`` and the
frame RBM's joint energy summed over *both* layers — sharing nothing with the library but the
parameter tensors. It checks the exact ``log p(v_t | v_<t)`` the model reports, and that the
training loss (the CD surrogate), with its negatives drawn exactly from each frame's RBM, has
the exact log-likelihood gradient in expectation, through the LSTM and the RTRBM path (BPTT).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from rnnrbm.core import estimators
from rnnrbm.models import SequenceModel, build_sequence_model

F64 = torch.float64
N_V, N_H, N_U = 4, 3, 3


def _model(seed: int = 0) -> SequenceModel:
    model = build_sequence_model(
        "lstm-rtrbm", n_visible=N_V, n_hidden=N_H, n_recurrent=N_U, k=1, dtype="float64"
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every parameter ~ N(0, 1): every term of every equation is live
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _batch(B: int = 3, T: int = 4, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, N_V, generator=g) < 0.5).to(F64)


def _states(n: int) -> Tensor:
    bits = torch.arange(2**n).unsqueeze(1).bitwise_right_shift(torch.arange(n - 1, -1, -1)) & 1
    return bits.to(F64)


def _lstm_cell(lstm: nn.LSTMCell, x: Tensor, u: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step written out (Hochreiter & Schmidhuber 1997 with forget gate, Gers et al.
    2000; PyTorch's gate order i, f, g, o)."""
    wi, wf, wg, wo = lstm.weight_ih.chunk(4, 0)
    ui, uf, ug, uo = lstm.weight_hh.chunk(4, 0)
    bi, bf, bg, bo = (lstm.bias_ih + lstm.bias_hh).chunk(4, 0)
    i = torch.sigmoid(x @ wi.T + u @ ui.T + bi)
    f = torch.sigmoid(x @ wf.T + u @ uf.T + bf)
    g = torch.tanh(x @ wg.T + u @ ug.T + bg)
    o = torch.sigmoid(x @ wo.T + u @ uo.T + bo)
    c = f * c + i * g
    return o * torch.tanh(c), c


def _oracle(model: SequenceModel, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log p(v_t | v_<t) (B, T), p(v | frame) (B, T, 2^n_v), the enumerated frames)``.

    ``ĥ(0) = r0``, ``u(0) = h0``, ``c(0) = c0``; frame ``t`` has ``b_v(t) = b_v + W″ ĥ(t−1)``,
    ``b_h(t) = b_h + W′ ĥ(t−1) + W_L u(t−1)`` and ``log p(v) = log Σ_h e^{−E(v,h)} −
    log Σ_{v,h} e^{−E(v,h)}``, ``−E(v,h) = v·b_v + h·b_h + vᵀWh``; then ``ĥ(t) = σ(W v(t) +
    b_h(t))`` and the LSTM reads ĥ(t).
    """
    rec, est = model.recurrence, model.estimator
    B, T, _ = v.shape
    V, H = _states(N_V), _states(N_H)
    W_rv, W_rh = rec.out.weight[:N_V], rec.out.weight[N_V:]  # W″, W′ (the RTRBM's)
    W_L = rec.bypass.weight
    r = rec.r0.expand(B, N_H)
    u = rec.h0.expand(B, N_U)
    c = rec.c0.expand(B, N_U)
    lps, probs = [], []
    for t in range(T):
        b_v = est.b_v + r @ W_rv.T  # (B, n_v)
        b_h = est.b_h + r @ W_rh.T + u @ W_L.T  # (B, n_h)
        neg_e = (
            (V @ b_v.T).T[:, :, None] + (H @ b_h.T).T[:, None, :] + (V @ est.W @ H.T)[None]
        )  # (B, 2^n_v, 2^n_h)
        log_pv = torch.logsumexp(neg_e, 2) - torch.logsumexp(neg_e.flatten(1), 1, keepdim=True)
        index = (v[:, t] * 2 ** torch.arange(N_V - 1, -1, -1, dtype=F64)).sum(1).long()
        lps.append(log_pv.gather(1, index[:, None])[:, 0])
        probs.append(log_pv.exp())
        r = torch.sigmoid(v[:, t] @ est.W + b_h)
        u, c = _lstm_cell(rec.lstm, r, u, c)
    return torch.stack(lps, 1), torch.stack(probs, 1), V


def test_the_oracle_is_normalised() -> None:
    _, probs, _ = _oracle(_model(), _batch())
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2], dtype=F64))


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_log_prob_matches_the_hand_written_model(seed: int) -> None:
    model, v = _model(seed), _batch(seed=seed + 5)
    expected, _, _ = _oracle(model, v)
    got = model.log_prob(v)
    assert got.estimator == "exact"
    torch.testing.assert_close(got.value, expected.detach(), rtol=0, atol=1e-10)
    # and the history matters (the LSTM path is live): frame 2 onwards differ from frame 1's
    # distribution under the learned initial state
    assert (expected[:, 1:] - expected[:, :1]).abs().max() > 1e-2


def test_cd_with_exact_negatives_has_the_exact_likelihood_gradient(monkeypatch) -> None:
    """E over exact negatives v⁻ ~ p(· | v_<t) of ∇ model.loss = ∇ (exact mean NLL).

    model.loss = mean_n [F(v_n; b_n) − F(v⁻_n; b_n)] is linear in each row's negative, so the
    expectation is Σ_n Σ_s p_n(s) · ∇(the loss with row n's negative = state s and every other
    row's negative = its data, which contributes nothing): the real training path (frame
    inputs, estimator loss, contrastive surrogate, BPTT into the LSTM) run once per (n, s).
    """
    model, v = _model(2), _batch(B=2, T=3, seed=7)
    params = list(model.parameters())
    lp, probs, V = _oracle(model, v)
    g_exact = torch.autograd.grad(-lp.mean(), params)
    p = probs.detach().reshape(-1, V.shape[0])  # row-major (sequence, time): frame_inputs' order
    rows = v.reshape(-1, N_V)

    expected = [torch.zeros_like(q) for q in params]
    for n in range(rows.shape[0]):
        for s in range(V.shape[0]):
            neg = rows.clone()
            neg[n] = V[s]

            def negatives(v_start: Tensor, *args, neg: Tensor = neg, **kwargs) -> Tensor:
                assert torch.equal(v_start, rows)
                return neg

            monkeypatch.setattr(estimators, "negative_samples", negatives)
            loss, _ = model.loss(v)
            for acc, gr in zip(expected, torch.autograd.grad(loss, params), strict=True):
                acc.add_(gr, alpha=float(p[n, s]))
    names = [name for name, _ in model.named_parameters()]
    assert {"recurrence.lstm.weight_ih", "recurrence.bypass.weight", "recurrence.r0"} <= set(names)
    for name, a, b in zip(names, g_exact, expected, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)
        assert a.abs().sum() > 1e-6, name  # every parameter is live
