"""A one-layer tanh RNN whose backward pass is written out (BPTT) rather than recorded by autograd.

``torch.rnn_tanh`` on the CPU runs its forward loop in C++ but leaves autograd a graph of ~4
nodes per time step; at the batch sizes the sequence models train on (1–8 sequences of
60–200 frames) replaying that graph costs more than the products in it. Here the forward pass is
the same kernel under ``no_grad``, and the backward pass is back-propagation through time
written as a recurrence on the pre-activation gradients ``δ(t)`` (Werbos 1990; with
``y(t) = tanh(a(t))``, ``a(t) = W_ih x(t) + W_hh y(t−1) + b``, ``b = b_ih + b_hh``)::

    δ(T) = g(T) ⊙ (1 − y(T)²)
    δ(t) = (g(t) + W_hhᵀ δ(t+1)) ⊙ (1 − y(t)²)          (one addmm and one multiply per step)
    ∂W_ih = Σ_t δ(t) x(t)ᵀ,  ∂W_hh = Σ_t δ(t) y(t−1)ᵀ,  ∂b = Σ_t δ(t),  ∂y(0) = W_hhᵀ δ(1)

with the three sums over all ``B·T`` rows as one product each. The gradient is the same quantity
as autograd's, summed in another order, so it agrees to rounding, not to the bit: a seeded
training run with it differs from one without after the first update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["tanh_rnn"]


class _TanhRNN(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
    ) -> Tensor:
        with torch.no_grad():  # the same kernel and arguments as autograd's path: the same y
            weights = [w_ih, w_hh, b_ih, b_hh]
            # (input, h0, weights, has_biases, layers, dropout, train, bidirectional, batch_first)
            y = torch.rnn_tanh(x, h0.unsqueeze(0), weights, True, 1, 0.0, False, False, True)[0]
        ctx.save_for_backward(x, h0, w_hh, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, h0, w_hh, y = ctx.saved_tensors
        B, T, H = y.shape
        slope = torch.mul(y, y).neg_().add_(1.0)  # 1 − y², every step at once
        delta = torch.empty_like(y)
        d = torch.mul(grad_y[:, T - 1], slope[:, T - 1])
        delta[:, T - 1] = d
        for t in range(T - 2, -1, -1):
            d = torch.addmm(grad_y[:, t], d, w_hh).mul_(slope[:, t])
            delta[:, t] = d
        rows = delta.reshape(B * T, H)
        need = ctx.needs_input_grad
        grad_h0 = d @ w_hh if need[1] else None
        grad_w_ih = rows.T @ x.reshape(B * T, -1) if need[2] else None
        grad_w_hh = None
        if need[3]:
            before = torch.cat([h0.unsqueeze(1), y[:, :-1]], 1).reshape(B * T, H)
            grad_w_hh = rows.T @ before
        grad_b = rows.sum(0) if need[4] or need[5] else None
        return None, grad_h0, grad_w_ih, grad_w_hh, grad_b, grad_b


def tanh_rnn(
    x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> Tensor:
    """Outputs ``y (B, T, H)`` of ``y(t) = tanh(W_ih x(t) + b_ih + W_hh y(t−1) + b_hh)`` from
    ``y(0) = h0 (B, H)`` over ``x (B, T, n)`` — the values of ``torch.rnn_tanh`` — with the
    hand-written backward pass above. ``x`` gets no gradient (the sequence models feed it data).
    """
    return _TanhRNN.apply(x, h0, w_ih, w_hh, b_ih, b_hh)
