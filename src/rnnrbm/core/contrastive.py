"""CD-k and PCD-k as surrogate losses whose autograd gradient is the RBM learning rule.

For a (conditional) RBM the log-likelihood gradient is ``−∂F(v_data)/∂θ + E_model[∂F(v)/∂θ]``
(Hinton 2002, eq. 5). Replacing the model expectation by the mean over detached negative samples
``v_neg`` gives the surrogate

    L = mean_n F(v_data,n; b_n) − mean_m F(v_neg,m; b_m)

whose gradient w.r.t. W and the biases — and, through per-frame biases, w.r.t. a recurrence — is
exactly the CD/PCD update (docs/design.md §1). Positive and negative rows go through ONE stacked
free-energy call so the forward and backward passes are one large GEMM each (docs/design.md §6).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnrbm.core.rbm import bernoulli, free_energy, gibbs_chain

__all__ = ["PersistentChains", "contrastive_loss", "negative_samples"]


def contrastive_loss(
    v_pos: Tensor,
    v_neg: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The CD/PCD surrogate ``mean F(v_pos) − mean F(v_neg)``.

    Biases are shared ``(n,)`` — then ``v_neg`` may have any number of rows (PCD chains) — or
    per example ``(N, n)``, in which case ``v_neg`` row ``n`` is a sample of example ``n``'s RBM
    and must have the same ``N`` rows. ``v_neg`` is detached. Returns ``(loss, F_pos, F_neg)``
    with the per-row free energies for monitoring.
    """
    v_neg = v_neg.detach()
    n_pos = v_pos.shape[0]
    stacked = torch.cat([v_pos, v_neg], 0)
    if b_v.dim() == 2 or b_h.dim() == 2:
        if v_neg.shape[0] != n_pos:
            raise ValueError(
                "contrastive_loss: per-example biases need one negative row per positive row, "
                f"got {n_pos} positive and {v_neg.shape[0]} negative rows. Fix: sample v_neg "
                "from the same per-example RBMs (CD-k)"
            )
        b_v = torch.cat([b_v, b_v], 0) if b_v.dim() == 2 else b_v
        b_h = torch.cat([b_h, b_h], 0) if b_h.dim() == 2 else b_h
    fe = free_energy(stacked, W, b_v, b_h, log_sigma)
    f_pos, f_neg = fe[:n_pos], fe[n_pos:]
    return f_pos.mean() - f_neg.mean(), f_pos.detach(), f_neg.detach()


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
