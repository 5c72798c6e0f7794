"""Training monitors for (conditional) RBMs: cheap numbers to watch while the likelihood is
intractable.

All functions take weights ``W (n_v, n_h)`` and biases shared ``(n,)`` or per example ``(N, n)``
like :mod:`rnnrbm.core.rbm`, and return one value per example (nats unless stated). They are
differentiable; wrap them in ``torch.no_grad()`` when they are only logged.

- Pseudo-log-likelihood (Besag 1975): ``Σ_i log P(v_i | v_−i)``, a proxy for ``log P(v)`` that needs
  no partition function. The full version is exact and deterministic; the stochastic one-bit
  version (deeplearning.net RBM tutorial, scikit-learn ``BernoulliRBM.score_samples``) is an
  unbiased estimate of it at ``1/n_h`` the cost.
- Reconstruction cross-entropy: how well one mean-field up-down pass reproduces the data. Cheap
  and popular but a poor proxy for likelihood (Hinton 2010, "A practical guide", §5).
- Free-energy gap (Hinton 2010 §6): ``mean F(valid) − mean F(train)``; log Z cancels, so a growing
  gap means the model assigns training data relatively more probability: overfitting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnrbm.core.rbm import free_energy, hidden_mean, hidden_preactivation, visible_preactivation
from rnnrbm.validation import InputError, check_binary, check_positive_int, error_message

__all__ = [
    "free_energy_gap",
    "pseudo_log_likelihood",
    "reconstruction_cross_entropy",
    "stochastic_pseudo_log_likelihood",
]

# Elements of the (chunk, n_v, n_h) flipped pre-activation tensor built at once: 4M floats = 16 MB.
_MAX_FLIP_ELEMENTS = 1 << 22


def _check_v(v: Tensor, W: Tensor, name: str = "v") -> None:
    if v.dim() != 2 or v.shape[1] != W.shape[0]:
        raise InputError(
            error_message(
                name,
                f"a tensor of shape (N, n_visible={W.shape[0]})",
                f"shape {tuple(v.shape)}",
                "pass a batch of visible vectors, one per row",
            )
        )


def pseudo_log_likelihood(
    v: Tensor, W: Tensor, b_v: Tensor, b_h: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """Full pseudo-log-likelihood ``Σ_i log P(v_i | v_−i)`` of binary ``v (N, n_v)``: ``(N,)`` nats.

    For Bernoulli visibles ``P(v_i | v_−i) = σ(F(v^(i)) − F(v))`` where ``v^(i)`` is ``v`` with
    bit i flipped, so ``log P(v_i | v_−i) = −softplus(F(v) − F(v^(i)))``. Flipping bit i changes the
    hidden pre-activation by a rank-1 term, ``x^(i) = x + (1 − 2 v_i) W_i``, so all ``n_v`` flipped
    copies are one ``(N, n_v, n_h)`` broadcast, built ``chunk_size`` rows at a time (default: as
    many rows as fit in ~4M elements). With ``d_i = 1 − 2 v_i``,

        F(v) − F(v^(i)) = d_i b_v,i + Σ_j [softplus(x_j + d_i W_ij) − softplus(x_j)],

    the difference taken per hidden unit before summing so float32 keeps its precision. Cost
    ``O(N n_v n_h)``, like ``n_v`` free energies. The result is ≤ 0; ``−PLL / n_v`` is the mean
    per-unit cross-entropy in nats.
    """
    _check_v(v, W)
    check_binary(v, "v")
    n_v, n_h = W.shape
    x = hidden_preactivation(v, W, b_h)  # (N, n_h)
    d = 1.0 - 2.0 * v  # (N, n_v)
    b_v_term = d * b_v  # (N, n_v): the visible-bias part of F(v) − F(v^(i))
    if chunk_size is None:
        chunk_size = max(1, _MAX_FLIP_ELEMENTS // max(1, n_v * n_h))
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    out = []
    for start in range(0, v.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        xc = x[rows, None, :]  # (c, 1, n_h)
        x_flip = xc + d[rows, :, None] * W  # (c, n_v, n_h)
        gain = b_v_term[rows] + (F.softplus(x_flip) - F.softplus(xc)).sum(-1)  # (c, n_v)
        out.append(-F.softplus(gain).sum(-1))
    return torch.cat(out)


def stochastic_pseudo_log_likelihood(
    v: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One-bit estimate ``n_v · log P(v_i | v_−i)`` with ``i`` uniform per example: ``(N,)`` nats.

    Unbiased for :func:`pseudo_log_likelihood` (the mean over ``i`` of ``n_v · log P_i`` is the
    sum), at the cost of two free energies instead of ``n_v + 1``. This is the monitor of the
    deeplearning.net RBM tutorial and scikit-learn's ``BernoulliRBM.score_samples``; its variance
    over draws is ``n_v² Var_i(log P_i)``, so average it over many examples.
    """
    _check_v(v, W)
    check_binary(v, "v")
    N, n_v = v.shape
    i = torch.randint(n_v, (N,), generator=generator, device=v.device)
    rows = torch.arange(N, device=v.device)
    d = 1.0 - 2.0 * v[rows, i]  # (N,)
    x = hidden_preactivation(v, W, b_h)
    x_flip = x + d[:, None] * W[i]  # (N, n_h)
    b_v_i = b_v[i] if b_v.dim() == 1 else b_v.expand(N, -1)[rows, i]
    gain = d * b_v_i + (F.softplus(x_flip) - F.softplus(x)).sum(-1)
    return -n_v * F.softplus(gain)


def reconstruction_cross_entropy(
    v: Tensor, W: Tensor, b_v: Tensor, b_h: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """Error of the mean-field reconstruction ``r = E[v | h = E[h | v]]``, per example ``(N,)``.

    Bernoulli visibles (``log_sigma is None``): the cross-entropy
    ``−Σ_i [v_i log r_i + (1 − v_i) log(1 − r_i)]`` in nats summed over units, computed from the
    logits ``a = b_v + W h`` as ``Σ_i softplus(a_i) − v_i a_i`` (finite for saturated units). ``v``
    may be any value in [0, 1] (e.g. grey levels).

    Gaussian visibles: the squared error ``Σ_i (v_i − r_i)²`` in squared data units, the
    "reconstruction error" of Hinton's guide (not a log-probability; it ignores σ).
    """
    _check_v(v, W)
    h = hidden_mean(v, W, b_h, log_sigma)
    a = visible_preactivation(h, W, b_v, log_sigma)
    if log_sigma is None:
        return (F.softplus(a) - v * a).sum(-1)
    return ((v - a) ** 2).sum(-1)


def free_energy_gap(
    train_v: Tensor,
    valid_v: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None = None,
) -> float:
    """``mean F(valid_v) − mean F(train_v)`` in nats (Hinton 2010, §6).

    Use a training subset about the size of the validation set. Near zero while the model
    generalises; a gap that grows over epochs means overfitting (training data get relatively
    lower free energy, i.e. higher probability, than held-out data). Biases must broadcast against
    both sets: shared ``(n,)``, or ``(N, n)`` when both sets have ``N`` rows.
    """
    _check_v(train_v, W, "train_v")
    _check_v(valid_v, W, "valid_v")
    for name, b in (("b_v", b_v), ("b_h", b_h)):
        if b.dim() == 2 and b.shape[0] != 1 and not (b.shape[0] == len(train_v) == len(valid_v)):
            raise InputError(
                error_message(
                    name,
                    "shared biases (n,) or per-example biases with one row per example in each set",
                    f"shape {tuple(b.shape)} for {train_v.shape[0]} train and "
                    f"{valid_v.shape[0]} valid rows",
                    "pass shared biases, or equal-sized sets with matching per-example biases",
                )
            )
    with torch.no_grad():
        f_valid = free_energy(valid_v, W, b_v, b_h, log_sigma).mean()
        f_train = free_energy(train_v, W, b_v, b_h, log_sigma).mean()
    return float(f_valid - f_train)
