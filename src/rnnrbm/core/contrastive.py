"""CD-k and PCD-k as surrogate losses whose autograd gradient is the RBM learning rule.

For a (conditional) RBM the log-likelihood gradient is ``−∂F(v_data)/∂θ + E_model[∂F(v)/∂θ]``
(Hinton 2002, eq. 5). Replacing the model expectation by the mean over detached negative samples
``v_neg`` gives the surrogate

    L = mean_n F(v_data,n; b_n) − mean_m F(v_neg,m; b_m)

whose gradient w.r.t. W and the biases — and, through per-frame biases, w.r.t. a recurrence — is
exactly the CD/PCD update (docs/design.md §1). Positive and negative rows go through ONE stacked
free-energy call so the forward and backward passes are one large GEMM each (docs/design.md §6).

``direct=True`` (Bernoulli visibles) writes that gradient out instead of letting autograd replay
the free energy: with ``σ = sigmoid(v W + b_h)`` per row and weights ``c = +1/N`` (data rows),
``−1/M`` (negative rows), ``∂L/∂W = −Σ c vᵀσ`` (one product over the stacked rows),
``∂L/∂b_h = −Σ c σ`` and ``∂L/∂b_v = −Σ c v`` (Hinton 2002, eq. 5). The loss value is the same
computation as autograd's path; the gradient agrees with it to rounding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnrbm.core.rbm import bernoulli, free_energy, gibbs_chain, hidden_preactivation

__all__ = ["GRADIENTS", "PersistentChains", "contrastive_loss", "negative_samples"]

# How a temporal model's gradient is formed: autograd's replay, or written out (``direct``).
GRADIENTS = ("autograd", "direct")


def contrastive_loss(
    v_pos: Tensor,
    v_neg: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None = None,
    *,
    direct: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """The CD/PCD surrogate ``mean F(v_pos) − mean F(v_neg)``.

    Biases are shared ``(n,)`` — then ``v_neg`` may have any number of rows (PCD chains) — or
    per example ``(N, n)``, in which case ``v_neg`` row ``n`` is a sample of example ``n``'s RBM
    and must have the same ``N`` rows. ``v_neg`` is detached. Returns ``(loss, F_pos, F_neg)``
    with the per-row free energies for monitoring. ``direct``: the gradient written out (see the
    module docstring) where the visibles are Bernoulli and ``v_pos`` is ``(N, n_v)`` and needs no
    gradient; autograd otherwise.
    """
    v_neg = v_neg.detach()
    n_pos = v_pos.shape[0]
    if (b_v.dim() == 2 or b_h.dim() == 2) and v_neg.shape[0] != n_pos:
        raise ValueError(
            "contrastive_loss: per-example biases need one negative row per positive row, "
            f"got {n_pos} positive and {v_neg.shape[0]} negative rows. Fix: sample v_neg "
            "from the same per-example RBMs (CD-k)"
        )
    if direct and log_sigma is None and v_pos.dim() == 2 and not v_pos.requires_grad:
        loss, fe = _DirectSurrogate.apply(v_pos, v_neg, W, b_v, b_h)
    else:
        stacked = torch.cat([v_pos, v_neg], 0)
        fe = free_energy(stacked, W, _twice(b_v), _twice(b_h), log_sigma)
        loss = fe[:n_pos].mean() - fe[n_pos:].mean()
    fe = fe.detach()
    return loss, fe[:n_pos], fe[n_pos:]


def _twice(b: Tensor) -> Tensor:
    """Per-example biases repeated for the stacked positive and negative rows."""
    return torch.cat([b, b], 0) if b.dim() == 2 else b


class _DirectSurrogate(torch.autograd.Function):
    """``mean F(v_pos) − mean F(v_neg)`` (Bernoulli) with its gradient written out."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, v_pos: Tensor, v_neg: Tensor, W: Tensor, b_v: Tensor, b_h: Tensor
    ) -> tuple[Tensor, Tensor]:
        n_pos = v_pos.shape[0]
        stacked = torch.cat([v_pos, v_neg], 0)
        x = hidden_preactivation(stacked, W, _twice(b_h))  # the ops of free_energy: same values
        fe = -(stacked * _twice(b_v)).sum(-1) - F.softplus(x).sum(-1)
        ctx.save_for_backward(stacked, x)
        ctx.n_pos, ctx.per_example = n_pos, (b_v.dim() == 2, b_h.dim() == 2)
        ctx.mark_non_differentiable(fe)
        return fe[:n_pos].mean() - fe[n_pos:].mean(), fe

    @staticmethod
    @once_differentiable  # its saved tensors carry no graph: a second derivative must not pass
    def backward(ctx: Any, grad: Tensor, _grad_fe: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        stacked, x = ctx.saved_tensors
        n_pos, n_neg = ctx.n_pos, stacked.shape[0] - ctx.n_pos
        # ∂F/∂W = −vᵀσ, ∂F/∂b_v = −v, ∂F/∂b_h = −σ, so with c = −grad/N on the data rows and
        # +grad/M on the negative rows every gradient is one product or one sum over rows of c·(…).
        c = torch.cat([grad.expand(n_pos) / -n_pos, grad.expand(n_neg) / n_neg]).unsqueeze(1)
        weighted_h = torch.sigmoid(x).mul_(c)  # c σ
        need = ctx.needs_input_grad
        grad_W = stacked.T @ weighted_h if need[2] else None
        v_rows, h_rows = ctx.per_example
        grad_b_v = grad_b_h = None
        if need[3]:
            weighted_v = stacked * c
            grad_b_v = weighted_v[:n_pos] + weighted_v[n_pos:] if v_rows else weighted_v.sum(0)
        if need[4]:
            h = weighted_h
            grad_b_h = h[:n_pos] + h[n_pos:] if h_rows else h.sum(0)
        return None, None, grad_W, grad_b_v, grad_b_h


def negative_samples(
    v_start: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    log_sigma: Tensor | None = None,
) -> Tensor:
    """CD-k negatives: ``k`` block-Gibbs steps from ``v_start`` (the data for CD)."""
    return gibbs_chain(v_start, W, b_v, b_h, k, generator, log_sigma).v


class PersistentChains(torch.nn.Module):
    """Fantasy particles for PCD (Tieleman 2008): ``n_chains`` rows, independent of batch size.

    A module only so that its state is a buffer: it moves with ``.to(device)`` and is saved in
    checkpoints. Chains start from random data rows on first use (or uniform random bits).
    """

    state: Tensor
    initialized: Tensor

    def __init__(
        self,
        n_chains: int,
        n_visible: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("state", torch.zeros(n_chains, n_visible, dtype=dtype, device=device))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool, device=device))
        self._known_ready = False  # avoids a device sync per step once the chains exist

    def reset(self, data: Tensor | None, generator: torch.Generator | None = None) -> None:
        """Restart every chain: from random rows of ``data`` or from uniform random bits."""
        with torch.no_grad():
            if data is None:
                self.state.copy_(bernoulli(torch.full_like(self.state, 0.5), generator))
            else:
                idx = torch.randint(
                    data.shape[0], (self.state.shape[0],), generator=generator, device=data.device
                )
                self.state.copy_(data[idx])
            self.initialized.fill_(True)
        self._known_ready = True

    def advance(
        self,
        W: Tensor,
        b_v: Tensor,
        b_h: Tensor,
        k: int,
        generator: torch.Generator | None = None,
        log_sigma: Tensor | None = None,
        data: Tensor | None = None,
    ) -> Tensor:
        """Run every chain ``k`` Gibbs steps under the current parameters; return the new state."""
        if not self._known_ready:
            if not bool(self.initialized):
                self.reset(data, generator)
            self._known_ready = True
        v = gibbs_chain(self.state, W, b_v, b_h, k, generator, log_sigma).v
        self.state.copy_(v)  # no autograd to stop: v is drawn under no_grad, the buffer is plain
        return self.state
