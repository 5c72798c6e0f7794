"""Tests for ``rnnrbm.core.monitors`` against brute force on tiny RBMs (float64).

Oracles are written from definitions: ``P(v) ∝ Σ_h exp(−E(v, h))`` by enumerating the hidden
layer, ``log P(v_i | v_−i) = log P(v) − log(P(v) + P(v with bit i flipped))`` unit by unit in a
Python loop, the reconstruction cross-entropy with scalar ``math`` functions.
"""

from __future__ import annotations

import math

import pytest
import torch

from rnnrbm.core import monitors
from rnnrbm.validation import InputError

D = torch.float64


def states(n: int) -> torch.Tensor:
    r = torch.arange(2**n)
    return ((r[:, None] >> torch.arange(n - 1, -1, -1)) & 1).to(D)


def params(n_v: int, n_h: int, seed: int, scale: float = 1.0, N: int | None = None):
    """W, b_v, b_h; biases are per example (N, n) when N is given."""
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(n_v, n_h, generator=g, dtype=D)
    lead = () if N is None else (N,)
    b_v = torch.randn(*lead, n_v, generator=g, dtype=D)
    b_h = 0.5 * torch.randn(*lead, n_h, generator=g, dtype=D)
    return W, b_v, b_h


def binary(N: int, n: int, seed: int, dtype=D) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, n, generator=g) < 0.5).to(dtype)


def brute_log_unnorm(v: torch.Tensor, W, b_v, b_h) -> float:
    """log Σ_h exp(v·b_v + h·b_h + vᵀWh) for one binary v (n_v,), enumerating h."""
    H = states(W.shape[1])
    return float(torch.logsumexp(v @ b_v + H @ b_h + H @ (W.T @ v), 0))


def brute_unit_terms(v: torch.Tensor, W, b_v, b_h) -> torch.Tensor:
    """log P(v_i | v_−i) for each unit of one example, (n_v,), by a loop over units."""
    terms = []
    lp = brute_log_unnorm(v, W, b_v, b_h)
    for i in range(len(v)):
        flipped = v.clone()
        flipped[i] = 1 - flipped[i]
        lq = brute_log_unnorm(flipped, W, b_v, b_h)
        terms.append(lp - math.log(math.exp(lp) + math.exp(lq)))
    return torch.tensor(terms, dtype=D)


def row_biases(b, n: int):
    return b if b.dim() == 1 else b[n]


# ------------------------------------------------------------------------- full pseudo-likelihood
def test_pll_equals_brute_force_on_every_state():
    W, b_v, b_h = params(5, 4, seed=0, scale=1.5)
    V = states(5)
    expected = torch.stack([brute_unit_terms(v, W, b_v, b_h).sum() for v in V])
    torch.testing.assert_close(monitors.pseudo_log_likelihood(V, W, b_v, b_h), expected)


def test_pll_per_example_biases_and_chunking():
    N = 7
    W, b_v, b_h = params(4, 3, seed=1, scale=2.0, N=N)
    v = binary(N, 4, seed=2)
    expected = torch.stack([brute_unit_terms(v[n], W, b_v[n], b_h[n]).sum() for n in range(N)])
    for chunk in (None, 1, 3, 100):
        got = monitors.pseudo_log_likelihood(v, W, b_v, b_h, chunk_size=chunk)
        torch.testing.assert_close(got, expected, msg=f"chunk_size={chunk}")
    # Mixed: shared visible biases, per-example hidden biases.
    expected_mixed = torch.stack(
        [brute_unit_terms(v[n], W, b_v[0], b_h[n]).sum() for n in range(N)]
    )
    torch.testing.assert_close(monitors.pseudo_log_likelihood(v, W, b_v[0], b_h), expected_mixed)


def test_pll_float32_precision_and_saturation():
    # A realistic size: float32 must agree with float64 (the per-unit softplus differences are
    # taken before summing over 200 hidden units), and huge pre-activations must stay finite.
    W, b_v, b_h = params(88, 200, seed=3, scale=0.3)
    v = binary(64, 88, seed=4)
    ref = monitors.pseudo_log_likelihood(v, W, b_v, b_h)
    got = monitors.pseudo_log_likelihood(v.float(), W.float(), b_v.float(), b_h.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-3)
    big = monitors.pseudo_log_likelihood(v, 100 * W, 100 * b_v, b_h)
    assert torch.isfinite(big).all() and (big <= 0).all()


def test_pll_is_differentiable():
    W, b_v, b_h = params(3, 2, seed=5)
    v = states(3)
    args = tuple(t.clone().requires_grad_() for t in (W, b_v, b_h))
    assert torch.autograd.gradcheck(lambda *a: monitors.pseudo_log_likelihood(v, *a), args)


def test_pll_input_errors():
    W, b_v, b_h = params(4, 3, seed=6)
    with pytest.raises(InputError, match=r"v: expected a tensor of shape \(N, n_visible=4\)"):
        monitors.pseudo_log_likelihood(torch.zeros(2, 5, dtype=D), W, b_v, b_h)
    with pytest.raises(InputError, match="binary values"):
        monitors.pseudo_log_likelihood(torch.full((2, 4), 0.5, dtype=D), W, b_v, b_h)
    with pytest.raises(InputError, match="chunk_size: expected an integer ≥ 1"):
        monitors.pseudo_log_likelihood(torch.zeros(2, 4, dtype=D), W, b_v, b_h, chunk_size=0)
    with pytest.raises(InputError, match="binary values"):
        monitors.stochastic_pseudo_log_likelihood(torch.full((2, 4), 0.5, dtype=D), W, b_v, b_h)


# ------------------------------------------------------------------- stochastic pseudo-likelihood
def test_stochastic_pll_is_one_scaled_unit_term():
    # Exact: every output is n_v · log P(v_i | v_−i) for one unit i, with per-example biases.
    N, n_v = 9, 5
    W, b_v, b_h = params(n_v, 3, seed=7, scale=1.5, N=N)
    v = binary(N, n_v, seed=8)
    terms = torch.stack([brute_unit_terms(v[n], W, b_v[n], b_h[n]) for n in range(N)])
    got = monitors.stochastic_pseudo_log_likelihood(
        v, W, b_v, b_h, generator=torch.Generator().manual_seed(0)
    )
    assert got.shape == (N,)
    dist = (got[:, None] - n_v * terms).abs().min(1).values
    assert dist.max() < 1e-10


def test_stochastic_pll_mean_matches_full_pll():
    # Averaging R draws per example: the estimator is unbiased with per-draw standard deviation
    # n_v · std_i(log P_i) (i uniform), so the mean is within 5 s.e. = 5 n_v std_i / √R.
    n_v, R = 6, 20_000
    W, b_v, b_h = params(n_v, 4, seed=9, scale=1.5)
    v = binary(5, n_v, seed=10)
    terms = torch.stack([brute_unit_terms(x, W, b_v, b_h) for x in v])  # (5, n_v)
    full = monitors.pseudo_log_likelihood(v, W, b_v, b_h)
    torch.testing.assert_close(full, terms.sum(1))
    draws = monitors.stochastic_pseudo_log_likelihood(
        v.repeat(R, 1), W, b_v, b_h, generator=torch.Generator().manual_seed(11)
    ).reshape(R, 5)
    se = n_v * terms.std(1, unbiased=False) / math.sqrt(R)
    assert torch.all((draws.mean(0) - full).abs() <= 5 * se)
    assert torch.all(se > 1e-3)  # the check is not vacuous: draws really vary


def test_stochastic_pll_seeded():
    W, b_v, b_h = params(8, 3, seed=12)
    v = binary(50, 8, seed=13)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return monitors.stochastic_pseudo_log_likelihood(v, W, b_v, b_h, generator=g)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


# ------------------------------------------------------------------- reconstruction cross-entropy
def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_reconstruction_cross_entropy_by_hand():
    W = torch.tensor([[1.0, -2.0], [0.5, 0.25], [-1.0, 3.0]], dtype=D)
    b_v = torch.tensor([0.1, -0.2, 0.3], dtype=D)
    b_h = torch.tensor([-0.5, 0.4], dtype=D)
    v = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.9, 0.5]], dtype=D)
    expected = []
    for row in v.tolist():
        h = [
            sigmoid(b_h[j].item() + sum(row[i] * W[i, j].item() for i in range(3))) for j in (0, 1)
        ]
        ce = 0.0
        for i in range(3):
            r = sigmoid(b_v[i].item() + sum(W[i, j].item() * h[j] for j in (0, 1)))
            ce -= row[i] * math.log(r) + (1 - row[i]) * math.log(1 - r)
        expected.append(ce)
    got = monitors.reconstruction_cross_entropy(v, W, b_v, b_h)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=D))


def test_reconstruction_squared_error_gaussian_by_hand():
    W = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=D)
    b_v = torch.tensor([0.1, -0.2], dtype=D)
    b_h = torch.tensor([-0.5, 0.4], dtype=D)
    log_sigma = torch.tensor([math.log(0.5), math.log(2.0)], dtype=D)
    sigma = [0.5, 2.0]
    v = torch.tensor([[1.5, -0.3], [0.0, 2.0]], dtype=D)
    expected = []
    for row in v.tolist():
        h = [
            sigmoid(b_h[j].item() + sum(row[i] / sigma[i] * W[i, j].item() for i in (0, 1)))
            for j in (0, 1)
        ]
        r = [b_v[i].item() + sigma[i] * sum(W[i, j].item() * h[j] for j in (0, 1)) for i in (0, 1)]
        expected.append(sum((row[i] - r[i]) ** 2 for i in (0, 1)))
    got = monitors.reconstruction_cross_entropy(v, W, b_v, b_h, log_sigma)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=D))


def test_reconstruction_cross_entropy_batched_and_saturated():
    N = 6
    W, b_v, b_h = params(5, 3, seed=14, N=N)
    v = binary(N, 5, seed=15)
    got = monitors.reconstruction_cross_entropy(v, W, b_v, b_h)
    looped = torch.cat(
        [monitors.reconstruction_cross_entropy(v[n : n + 1], W, b_v[n], b_h[n]) for n in range(N)]
    )
    torch.testing.assert_close(got, looped)
    assert (got > 0).all()
    # A unit that is on while its reconstruction logit is −1000: finite, ≈ 1000 nats.
    one = torch.ones(1, 1, dtype=D)
    ce = monitors.reconstruction_cross_entropy(
        one, 0 * one, torch.tensor([-1000.0], dtype=D), one[0]
    )
    assert ce.item() == pytest.approx(1000.0)


# ------------------------------------------------------------------------------ free-energy gap
def brute_free_energy(v, W, b_v, b_h, log_sigma=None) -> torch.Tensor:
    """F(v) = −log Σ_h exp(−E(v, h)) row by row, enumerating h."""
    H = states(W.shape[1])
    out = []
    for x in v:
        sigma = torch.ones_like(x) if log_sigma is None else torch.exp(log_sigma)
        vis = x @ b_v if log_sigma is None else -(((x - b_v) / sigma) ** 2).sum() / 2
        out.append(-torch.logsumexp(vis + H @ b_h + H @ (W.T @ (x / sigma)), 0))
    return torch.stack(out)


@pytest.mark.parametrize("gaussian", [False, True])
def test_free_energy_gap_values(gaussian):
    W, b_v, b_h = params(5, 4, seed=16)
    ls = (
        0.3 * torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=D)
        if gaussian
        else None
    )
    train = torch.randn(10, 5, dtype=D) if gaussian else binary(10, 5, seed=17)
    valid = torch.randn(7, 5, dtype=D) if gaussian else binary(7, 5, seed=18)
    expected = (
        brute_free_energy(valid, W, b_v, b_h, ls).mean()
        - brute_free_energy(train, W, b_v, b_h, ls).mean()
    )
    gap = monitors.free_energy_gap(train, valid, W, b_v, b_h, ls)
    assert isinstance(gap, float)
    assert gap == pytest.approx(float(expected), rel=1e-12, abs=1e-12)
    assert monitors.free_energy_gap(train, train, W, b_v, b_h, ls) == 0.0


def test_free_energy_gap_sign_means_overfitting():
    # With W = 0, F(v) = −v·b_v − Σ softplus(b_h): a model whose biases favour the training
    # patterns gives them lower free energy, so the gap is positive and equals Σ b_v exactly.
    W = torch.zeros(3, 2, dtype=D)
    b_v = torch.tensor([1.0, 2.0, 0.5], dtype=D)
    b_h = torch.tensor([0.3, -0.1], dtype=D)
    train, valid = torch.ones(4, 3, dtype=D), torch.zeros(6, 3, dtype=D)
    assert monitors.free_energy_gap(train, valid, W, b_v, b_h) == pytest.approx(3.5)
    assert monitors.free_energy_gap(valid, train, W, b_v, b_h) == pytest.approx(-3.5)


def test_free_energy_gap_per_example_biases():
    N = 5
    W, b_v, b_h = params(4, 3, seed=19, N=N)
    train, valid = binary(N, 4, seed=20), binary(N, 4, seed=21)
    expected = torch.mean(
        torch.cat([brute_free_energy(valid[n : n + 1], W, b_v[n], b_h[n]) for n in range(N)])
    ) - torch.mean(
        torch.cat([brute_free_energy(train[n : n + 1], W, b_v[n], b_h[n]) for n in range(N)])
    )
    assert monitors.free_energy_gap(train, valid, W, b_v, b_h) == pytest.approx(float(expected))
    with pytest.raises(InputError, match=r"b_v: expected shared biases .* got shape \(5, 4\)"):
        monitors.free_energy_gap(train, valid[:3], W, b_v, b_h)
    with pytest.raises(InputError, match=r"valid_v: expected a tensor of shape \(N, n_visible=4\)"):
        monitors.free_energy_gap(train, valid[:, :3], W, b_v[0], b_h[0])
