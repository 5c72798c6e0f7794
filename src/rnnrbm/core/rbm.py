"""Conditional-RBM math on raw tensors: energies, free energies, conditionals, block Gibbs.

Every function takes the weights ``W (n_v, n_h)`` and biases ``b_v``, ``b_h`` that are either
shared ``(n,)`` or per example ``(N, n)`` (the temporal models give every frame its own biases);
they broadcast against a batch of states ``(N, n)``.

Visible units are Bernoulli when ``log_sigma is None``, else Gaussian with per-unit standard
deviation ``σ = exp(log_sigma)`` (learned in log space so it stays positive). Energies:

    Bernoulli (Hinton 2002):     E(v, h) = −v·b_v − h·b_h − vᵀ W h
    Gaussian  (Hinton 2010 §13): E(v, h) = Σ_i (v_i − b_v,i)² / 2σ_i² − h·b_h − (v/σ)ᵀ W h

Log-sigmoid / softplus keep everything finite for any pre-activation (never log(1 + exp x)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnrbm.validation import check_positive_int

__all__ = [
    "GibbsState",
    "bernoulli",
    "energy",
    "free_energy",
    "free_energy_hidden",
    "gibbs_chain",
    "hidden_mean",
    "hidden_preactivation",
    "sample_hidden",
    "sample_visible",
    "visible_mean",
    "visible_preactivation",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# Two 24-bit uniforms per 64-bit Mersenne-Twister word: keep bits 0–23 of each 32-bit half.
_LOW_24_BITS_OF_EACH_HALF = 0x00FFFFFF00FFFFFF
_PAIRED_DRAWS_FROM = 16_384  # elements; below this the two extra ops cost more than they save


def bernoulli(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Sample {0, 1} with probabilities ``p`` (same dtype as ``p``): ``[u < p]``, ``u ~ U[0, 1)``.

    Draws uniforms into a fresh buffer and compares in place (``u.lt_(p)`` writes 1.0/0.0):
    measured 2–4× faster on CPU than ``torch.bernoulli`` or ``(torch.rand(...) < p).float()``
    at these sizes (DESIGN §6), from the same explicit generator. For large float32 CPU
    batches the uniforms come two per 64-bit ``random_`` word, each ``k · 2⁻²⁴`` with ``k`` a
    uniform 24-bit integer — the same grid ``uniform_`` uses for float32, so the distribution is
    unchanged — which halves the Mersenne-Twister calls (measured 1.3–1.45× faster sampling at
    500–2,000 × 88–150; the generator's stream differs from ``uniform_``'s).
    """
    n = p.numel()
    if p.dtype != torch.float32 or p.device.type != "cpu" or n < _PAIRED_DRAWS_FROM:
        u = torch.empty_like(p, memory_format=torch.contiguous_format).uniform_(generator=generator)
        return u.lt_(p)
    words = torch.empty((n + 1) // 2, dtype=torch.int64)
    words.random_(-(2**63), None, generator=generator).bitwise_and_(_LOW_24_BITS_OF_EACH_HALF)
    u = torch.mul(words.view(torch.int32)[:n].view(p.shape), 2.0**-24)
    return u.lt_(p)


def _scaled(v: Tensor, log_sigma: Tensor | None) -> Tensor:
    return v if log_sigma is None else v * torch.exp(-log_sigma)


def hidden_preactivation(
    v: Tensor, W: Tensor, b_h: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """``b_h + (v/σ) W``: the input to each hidden unit, ``(N, n_h)``."""
    return (
        torch.addmm(b_h, _scaled(v, log_sigma), W)
        if b_h.dim() == 1
        else b_h + _scaled(v, log_sigma) @ W
    )


def hidden_mean(v: Tensor, W: Tensor, b_h: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """``P(h = 1 | v) = σ(b_h + (v/σ) W)``."""
    return torch.sigmoid(hidden_preactivation(v, W, b_h, log_sigma))


def visible_preactivation(
    h: Tensor, W: Tensor, b_v: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """Bernoulli: the logit ``b_v + W h``. Gaussian: the mean ``b_v + σ ⊙ W h``."""
    wh = h @ W.T
    if log_sigma is not None:
        wh = wh * torch.exp(log_sigma)
    return wh + b_v


def visible_mean(h: Tensor, W: Tensor, b_v: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """``E[v | h]``: a sigmoid for Bernoulli visibles, the Gaussian mean otherwise."""
    a = visible_preactivation(h, W, b_v, log_sigma)
    return torch.sigmoid(a) if log_sigma is None else a


def sample_hidden(
    v: Tensor,
    W: Tensor,
    b_h: Tensor,
    generator: torch.Generator | None = None,
    log_sigma: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``h ~ P(h | v)``; returns ``(sample, mean)``."""
    mean = hidden_mean(v, W, b_h, log_sigma)
    return bernoulli(mean, generator), mean


def sample_visible(
    h: Tensor,
    W: Tensor,
    b_v: Tensor,
    generator: torch.Generator | None = None,
    log_sigma: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``v ~ P(v | h)``; returns ``(sample, mean)``."""
    mean = visible_mean(h, W, b_v, log_sigma)
    if log_sigma is None:
        return bernoulli(mean, generator), mean
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + noise * torch.exp(log_sigma), mean


def energy(
    v: Tensor, h: Tensor, W: Tensor, b_v: Tensor, b_h: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """Joint energy ``E(v, h)`` per example, ``(N,)``."""
    interaction = ((_scaled(v, log_sigma) @ W) * h).sum(-1)
    if log_sigma is None:
        visible_term = -(v * b_v).sum(-1)
    else:
        visible_term = (0.5 * ((v - b_v) * torch.exp(-log_sigma)) ** 2).sum(-1)
    return visible_term - (h * b_h).sum(-1) - interaction


def free_energy(
    v: Tensor, W: Tensor, b_v: Tensor, b_h: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """``F(v) = −log Σ_h exp(−E(v, h))`` per example, ``(N,)`` (hiddens summed analytically)."""
    softplus_sum = F.softplus(hidden_preactivation(v, W, b_h, log_sigma)).sum(-1)
    if log_sigma is None:
        return -(v * b_v).sum(-1) - softplus_sum
    return (0.5 * ((v - b_v) * torch.exp(-log_sigma)) ** 2).sum(-1) - softplus_sum


def free_energy_hidden(
    h: Tensor, W: Tensor, b_v: Tensor, b_h: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """``F(h) = −log Σ_v exp(−E(v, h))`` per example (an integral for Gaussian visibles).

    Gaussian case: completing the square with ``a = W h`` gives
    ``∫ exp(−E) dv = exp(h·b_h) Π_i σ_i √(2π) exp(b_v,i a_i / σ_i + a_i² / 2)``.
    """
    a = h @ W.T
    hidden_term = -(h * b_h).sum(-1)
    if log_sigma is None:
        return hidden_term - F.softplus(a + b_v).sum(-1)
    sigma_inv = torch.exp(-log_sigma)
    per_unit = log_sigma + _LOG_SQRT_2PI + b_v * sigma_inv * a + 0.5 * a * a
    return hidden_term - per_unit.sum(-1)


class GibbsState(NamedTuple):
    """The end of a block-Gibbs chain: last visible sample, its mean, and the hidden mean
    that produced it (useful for reconstruction monitors and Rao-Blackwellised statistics)."""

    v: Tensor
    v_mean: Tensor
    h_mean: Tensor


def _apply_clamp(v: Tensor, clamp: tuple[Tensor, Tensor] | None) -> Tensor:
    if clamp is None:
        return v
    mask, values = clamp
    return torch.where(mask, values, v)


def gibbs_chain(
    v0: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    log_sigma: Tensor | None = None,
    clamp: tuple[Tensor, Tensor] | None = None,
) -> GibbsState:
    """Run ``k ≥ 1`` steps of block Gibbs ``v → h → v`` from ``v0``.

    ``clamp=(mask, values)`` holds the visible units where ``mask`` is True at ``values`` after
    every visible draw: sampling the rest from the conditional given the clamped units
    (harmonisation). The chain runs under ``torch.no_grad``: samples are constants for CD/PCD.
    """
    check_positive_int(k, "gibbs_chain k (Gibbs steps)")
    with torch.no_grad():
        v = _apply_clamp(v0, clamp)
        v_mean = v
        h_mean = v.new_empty(0)
        for _ in range(k):
            h, h_mean = sample_hidden(v, W, b_h, generator, log_sigma)
            v, v_mean = sample_visible(h, W, b_v, generator, log_sigma)
            v = _apply_clamp(v, clamp)
        return GibbsState(v, v_mean, h_mean)
