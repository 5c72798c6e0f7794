"""Oracle tests for ``rnnrbm.core.rbm``: every quantity is checked against brute force.

The references below are written from the formulas (Hinton 2002 for Bernoulli visibles, Hinton
2010 §13 for Gaussian visibles), not from the library: joint energies by an explicit einsum,
free energies and conditionals by enumerating a binary layer, Gaussian integrals over ``v`` by a
fine Riemann sum (exact to machine precision for a Gaussian integrand) or the multivariate
Gaussian integral ``∫exp(−½vᵀAv + Jᵀv)dv = (2π)^{n/2} det(A)^{−½} exp(½JᵀA⁻¹J)``. Samplers are
checked by moments with stated standard errors and by chi-square goodness of fit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from rnnrbm.core import rbm

D = torch.float64
P_MIN = 1e-3  # chi-square acceptance threshold (a correct sampler fails 1 run in 1000)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


# ---------------------------------------------------------------------------------- references
def states(n: int) -> torch.Tensor:
    """All of {0,1}^n, (2**n, n), row r is the binary expansion of r (first unit = MSB)."""
    r = torch.arange(2**n)
    return ((r[:, None] >> torch.arange(n - 1, -1, -1)) & 1).to(D)


def params(n_v: int, n_h: int, seed: int, gaussian: bool = False, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(n_v, n_h, generator=g, dtype=D)
    b_v = torch.randn(n_v, generator=g, dtype=D)
    b_h = 0.5 * torch.randn(n_h, generator=g, dtype=D)
    log_sigma = 0.4 * torch.randn(n_v, generator=g, dtype=D) if gaussian else None
    return W, b_v, b_h, log_sigma


def ref_energy(v, h, W, b_v, b_h, log_sigma=None):
    """E(v, h) per row, from the textbook formula."""
    if log_sigma is None:
        sigma = torch.ones_like(b_v)
        visible = -(v * b_v).sum(-1)
    else:
        sigma = torch.exp(log_sigma)
        visible = ((v - b_v) ** 2 / (2 * sigma**2)).sum(-1)
    interaction = torch.einsum("ni,ij,nj->n", v / sigma, W, h)
    return visible - (h * b_h).sum(-1) - interaction


def joint_neg_energy(W, b_v, b_h):
    """−E(v, h) for every binary pair: (2**n_v, 2**n_h)."""
    V, H = states(W.shape[0]), states(W.shape[1])
    vv = V.repeat_interleave(len(H), 0)
    hh = H.repeat(len(V), 1)
    return -ref_energy(vv, hh, W, b_v, b_h).reshape(len(V), len(H))


def exact_visible_probs(W, b_v, b_h) -> np.ndarray:
    """P(v) over the 2**n_v states (ordered as ``states``), by summing the joint over h."""
    log_p = torch.logsumexp(joint_neg_energy(W, b_v, b_h), 1)
    return torch.softmax(log_p, 0).numpy()


def state_index(v: torch.Tensor) -> torch.Tensor:
    """Row index in ``states(n)`` of each binary row of v."""
    n = v.shape[-1]
    return (v.long() * (2 ** torch.arange(n - 1, -1, -1))).sum(-1)


def chi2_pvalue(samples: torch.Tensor, probs: np.ndarray) -> float:
    counts = np.bincount(state_index(samples).numpy(), minlength=len(probs))
    expected = probs * counts.sum()
    assert expected.min() >= 5, "chi-square needs ≥ 5 expected counts per cell"
    return float(stats.chisquare(counts, expected).pvalue)


# A Riemann sum of a Gaussian with step δ has relative error ~exp(−2π²σ²/δ²) (Poisson summation):
# with σ ≥ 0.3 (asserted) and δ ≤ 0.1 that is < 1e-70, so the sums below are exact integrals.
GRID_1D = torch.arange(-40.0, 40.0, 0.01, dtype=D)
GRID_2D_AXIS = torch.arange(-25.0, 25.0, 0.1, dtype=D)


def gaussian_grid(n_v: int) -> tuple[torch.Tensor, float]:
    """Grid points over v (M, n_v) and the volume element, for n_v ∈ {1, 2}."""
    if n_v == 1:
        return GRID_1D[:, None], 0.01
    a, b = torch.meshgrid(GRID_2D_AXIS, GRID_2D_AXIS, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], 1), 0.1**2


# ---------------------------------------------------------------------------------- energies
@pytest.mark.parametrize("gaussian", [False, True])
def test_energy_matches_formula(gaussian):
    W, b_v, b_h, ls = params(4, 3, seed=0, gaussian=gaussian)
    g = torch.Generator().manual_seed(1)
    h = states(3).repeat(5, 1)
    v = (
        torch.randn(len(h), 4, generator=g, dtype=D)
        if gaussian
        else states(4)[torch.arange(40) % 16]
    )
    torch.testing.assert_close(rbm.energy(v, h, W, b_v, b_h, ls), ref_energy(v, h, W, b_v, b_h, ls))


def test_energy_single_term_by_hand():
    # one visible, one hidden: E = −v b_v − h b_h − v W h (Bernoulli) or with (v − b)²/2σ².
    W, b_v, b_h = (
        torch.tensor([[2.0]], dtype=D),
        torch.tensor([0.5], dtype=D),
        torch.tensor([-1.0], dtype=D),
    )
    one = torch.ones(1, 1, dtype=D)
    assert rbm.energy(one, one, W, b_v, b_h).item() == pytest.approx(-0.5 + 1.0 - 2.0)
    ls = torch.tensor([math.log(2.0)], dtype=D)  # σ = 2
    v = torch.tensor([[3.0]], dtype=D)
    expected = (3.0 - 0.5) ** 2 / 8 + 1.0 - 3.0 / 2 * 2.0
    assert rbm.energy(v, one, W, b_v, b_h, ls).item() == pytest.approx(expected)


@pytest.mark.parametrize("gaussian", [False, True])
def test_free_energy_enumerates_hiddens(gaussian):
    n_v, n_h = 5, 4
    W, b_v, b_h, ls = params(n_v, n_h, seed=2, gaussian=gaussian, scale=1.5)
    if gaussian:
        v = 2 * torch.randn(7, n_v, generator=torch.Generator().manual_seed(3), dtype=D)
    else:
        v = states(n_v)
    H = states(n_h)
    vv = v.repeat_interleave(len(H), 0)
    hh = H.repeat(len(v), 1)
    neg_e = -ref_energy(vv, hh, W, b_v, b_h, ls).reshape(len(v), len(H))
    torch.testing.assert_close(rbm.free_energy(v, W, b_v, b_h, ls), -torch.logsumexp(neg_e, 1))


def test_free_energy_hidden_bernoulli_enumerates_visibles():
    W, b_v, b_h, _ = params(6, 4, seed=4, scale=1.5)
    neg_e = joint_neg_energy(W, b_v, b_h)  # (2**n_v, 2**n_h)
    expected = -torch.logsumexp(neg_e, 0)
    torch.testing.assert_close(rbm.free_energy_hidden(states(4), W, b_v, b_h), expected)


@pytest.mark.parametrize("n_v", [1, 2])
def test_free_energy_hidden_gaussian_by_quadrature(n_v):
    W, b_v, b_h, ls = params(n_v, 3, seed=5 + n_v, gaussian=True)
    assert ls.min() > math.log(0.3)
    grid, dv = gaussian_grid(n_v)
    H = states(3)
    expected = []
    for h in H:
        neg_e = -ref_energy(grid, h.expand(len(grid), -1), W, b_v, b_h, ls)
        expected.append(-(torch.logsumexp(neg_e, 0) + math.log(dv)))
    got = rbm.free_energy_hidden(H, W, b_v, b_h, ls)
    torch.testing.assert_close(got, torch.stack(expected), rtol=0, atol=1e-9)


def test_free_energy_hidden_gaussian_multivariate_integral():
    # −E = −½ vᵀ A v + Jᵀ v + c with A = diag(σ⁻²), J = b_v σ⁻² + (W h)/σ, c = h·b_h − ½ Σ b²/σ².
    n_v, n_h = 6, 4
    W, b_v, b_h, ls = params(n_v, n_h, seed=8, gaussian=True)
    H = states(n_h)
    sigma = torch.exp(ls)
    A = torch.diag(sigma**-2)
    expected = []
    for h in H:
        J = b_v / sigma**2 + (W @ h) / sigma
        c = h @ b_h - 0.5 * (b_v**2 / sigma**2).sum()
        log_int = (
            0.5 * n_v * math.log(2 * math.pi)
            - 0.5 * torch.logdet(A)
            + 0.5 * J @ torch.linalg.solve(A, J)
            + c
        )
        expected.append(-log_int)
    torch.testing.assert_close(rbm.free_energy_hidden(H, W, b_v, b_h, ls), torch.stack(expected))


# ---------------------------------------------------------------------------------- conditionals
def test_conditionals_bernoulli_match_joint():
    n_v, n_h = 4, 3
    W, b_v, b_h, _ = params(n_v, n_h, seed=9, scale=2.0)
    V, H = states(n_v), states(n_h)
    p = torch.softmax(joint_neg_energy(W, b_v, b_h).flatten(), 0).reshape(len(V), len(H))
    p_h_given_v = p / p.sum(1, keepdim=True)  # rows: v
    p_v_given_h = p / p.sum(0, keepdim=True)  # columns: h
    torch.testing.assert_close(rbm.hidden_mean(V, W, b_h), p_h_given_v @ H)
    torch.testing.assert_close(rbm.visible_mean(H, W, b_v), p_v_given_h.T @ V)


def test_hidden_mean_gaussian_enumerates_hiddens():
    n_v, n_h = 3, 4
    W, b_v, b_h, ls = params(n_v, n_h, seed=10, gaussian=True)
    v = 2 * torch.randn(5, n_v, generator=torch.Generator().manual_seed(0), dtype=D)
    H = states(n_h)
    vv = v.repeat_interleave(len(H), 0)
    hh = H.repeat(len(v), 1)
    post = torch.softmax(-ref_energy(vv, hh, W, b_v, b_h, ls).reshape(len(v), len(H)), 1)
    torch.testing.assert_close(rbm.hidden_mean(v, W, b_h, ls), post @ H)


@pytest.mark.parametrize("n_v", [1, 2])
def test_visible_mean_gaussian_by_quadrature(n_v):
    W, b_v, b_h, ls = params(n_v, 3, seed=11 + n_v, gaussian=True)
    assert ls.min() > math.log(0.3)
    grid, _ = gaussian_grid(n_v)
    H = states(3)
    expected = []
    for h in H:
        w = torch.softmax(-ref_energy(grid, h.expand(len(grid), -1), W, b_v, b_h, ls), 0)
        expected.append(w @ grid)
    torch.testing.assert_close(
        rbm.visible_mean(H, W, b_v, ls), torch.stack(expected), rtol=0, atol=1e-9
    )


# ---------------------------------------------------------------------------------- batched biases
def every_output(v, h, W, b_v, b_h, ls):
    return {
        "energy": rbm.energy(v, h, W, b_v, b_h, ls),
        "free_energy": rbm.free_energy(v, W, b_v, b_h, ls),
        "free_energy_hidden": rbm.free_energy_hidden(h, W, b_v, b_h, ls),
        "hidden_pre": rbm.hidden_preactivation(v, W, b_h, ls),
        "hidden_mean": rbm.hidden_mean(v, W, b_h, ls),
        "visible_pre": rbm.visible_preactivation(h, W, b_v, ls),
        "visible_mean": rbm.visible_mean(h, W, b_v, ls),
    }


@pytest.mark.parametrize("gaussian", [False, True])
def test_per_example_biases_equal_looping(gaussian):
    N, n_v, n_h = 6, 5, 4
    W, _, _, ls = params(n_v, n_h, seed=12, gaussian=gaussian)
    g = torch.Generator().manual_seed(13)
    B_v = torch.randn(N, n_v, generator=g, dtype=D)
    B_h = torch.randn(N, n_h, generator=g, dtype=D)
    v = (
        torch.randn(N, n_v, generator=g, dtype=D)
        if gaussian
        else (torch.rand(N, n_v, generator=g) < 0.5).to(D)
    )
    h = (torch.rand(N, n_h, generator=g) < 0.5).to(D)
    batched = every_output(v, h, W, B_v, B_h, ls)
    looped = [every_output(v[i : i + 1], h[i : i + 1], W, B_v[i], B_h[i], ls) for i in range(N)]
    for name, got in batched.items():
        torch.testing.assert_close(got, torch.cat([row[name] for row in looped]), msg=name)
    # And the per-example biases really are used: shared row-0 biases give different results.
    assert not torch.allclose(batched["free_energy"], rbm.free_energy(v, W, B_v[0], B_h[0], ls))


# ---------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_bernoulli_frequencies_dtype_device(dtype, device):
    N = 40_000
    p = torch.tensor([0.0, 0.03, 0.5, 0.9, 1.0], dtype=dtype, device=device).expand(N, -1)
    g = torch.Generator(device=device).manual_seed(0)
    x = rbm.bernoulli(p, g)
    assert x.dtype == dtype and x.device.type == device and x.shape == p.shape
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert x[:, 0].sum() == 0 and x[:, 4].sum() == N  # p = 0 and p = 1 are exact
    freq, p0 = x.mean(0).double().cpu(), p[0].double().cpu()
    se = torch.sqrt(p0 * (1 - p0) / N)
    assert torch.all((freq - p0).abs() <= 5 * se + 1e-12)


def test_bernoulli_paired_draws_are_independent():
    """Large float32 batches take two uniforms from each 64-bit word: neighbours (one word) and
    rows must be uncorrelated; joint frequencies match p² and 2p(1 − p)."""
    p = torch.full((400, 150), 0.3)  # 60,000 elements: the paired path
    x = torch.cat([rbm.bernoulli(p, torch.Generator().manual_seed(s)) for s in range(5)])
    pairs = x.reshape(-1, 2)  # the two halves of one word
    n = pairs.shape[0]
    for observed, expected in [
        (float((pairs.sum(1) == 2).double().mean()), 0.09),
        (float((pairs.sum(1) == 1).double().mean()), 0.42),
    ]:
        assert abs(observed - expected) < 5 * (expected * (1 - expected) / n) ** 0.5
    corr = torch.corrcoef(torch.stack([x[:, :-1].flatten(), x[:, 1:].flatten()]).double())[0, 1]
    assert abs(float(corr)) < 5 / x[:, 1:].numel() ** 0.5


def test_bernoulli_seeded_determinism():
    p = torch.full((50, 30), 0.4)
    a = rbm.bernoulli(p, torch.Generator().manual_seed(7))
    b = rbm.bernoulli(p, torch.Generator().manual_seed(7))
    c = rbm.bernoulli(p, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_sample_hidden_and_bernoulli_visible(dtype, device):
    W, b_v, b_h, _ = params(3, 2, seed=14, scale=1.5)
    W, b_v, b_h = (t.to(device=device, dtype=dtype) for t in (W, b_v, b_h))
    N = 40_000
    v = torch.tensor([1.0, 0.0, 1.0], dtype=dtype, device=device).expand(N, -1)
    h = torch.tensor([0.0, 1.0], dtype=dtype, device=device).expand(N, -1)
    g = torch.Generator(device=device).manual_seed(1)
    for sample, mean, exact in (
        (*rbm.sample_hidden(v, W, b_h, g), rbm.hidden_mean(v, W, b_h)),
        (*rbm.sample_visible(h, W, b_v, g), rbm.visible_mean(h, W, b_v)),
    ):
        assert sample.dtype == dtype and sample.device.type == device
        assert sample.shape == mean.shape == exact.shape
        torch.testing.assert_close(mean, exact)
        assert set(sample.unique().tolist()) <= {0.0, 1.0}
        p = exact[0].double().cpu()
        se = torch.sqrt(p * (1 - p) / N)
        assert torch.all((sample.double().mean(0).cpu() - p).abs() <= 5 * se)
    g1, g2 = (
        torch.Generator(device=device).manual_seed(5),
        torch.Generator(device=device).manual_seed(5),
    )
    assert torch.equal(
        rbm.sample_hidden(v[:9], W, b_h, g1)[0], rbm.sample_hidden(v[:9], W, b_h, g2)[0]
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_sample_visible_gaussian_moments(dtype, device):
    n_v, N = 3, 100_000
    W, b_v, _, ls = params(n_v, 2, seed=15, gaussian=True)
    h = torch.tensor([[1.0, 0.0]], dtype=D).expand(N, -1)
    mu = b_v + torch.exp(ls) * (W @ h[0])  # written out: b_v + σ ⊙ W h
    var = torch.exp(2 * ls)
    args = (t.to(device=device, dtype=dtype) for t in (h, W, b_v))
    g = torch.Generator(device=device).manual_seed(2)
    x, mean = rbm.sample_visible(*args, generator=g, log_sigma=ls.to(device=device, dtype=dtype))
    assert x.dtype == dtype and x.device.type == device and x.shape == (N, n_v)
    torch.testing.assert_close(mean[0].double().cpu(), mu, rtol=1e-6, atol=1e-6)
    x = x.double().cpu()
    # s.e. of a sample mean is σ/√N, of a sample variance σ²·√(2/(N−1)) (Gaussian data).
    assert torch.all((x.mean(0) - mu).abs() <= 5 * torch.sqrt(var / N))
    assert torch.all((x.var(0) - var).abs() <= 5 * var * math.sqrt(2 / (N - 1)))
    # Seeded determinism.
    a = rbm.sample_visible(h[:4], W, b_v, torch.Generator().manual_seed(3), ls)[0]
    b = rbm.sample_visible(h[:4], W, b_v, torch.Generator().manual_seed(3), ls)[0]
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- Gibbs chains
def transition_second_eigenvalue(W, b_v, b_h) -> float:
    """|λ₂| of the exact v → h → v transition matrix: TV distance to stationarity ≲ |λ₂|^k."""
    V, H = states(W.shape[0]), states(W.shape[1])
    ph = torch.sigmoid(b_h + V @ W)  # (|V|, n_h)
    P_h_given_v = torch.prod(H[None] * ph[:, None] + (1 - H[None]) * (1 - ph[:, None]), -1)
    pv = torch.sigmoid(b_v + H @ W.T)  # (|H|, n_v)
    P_v_given_h = torch.prod(V[None] * pv[:, None] + (1 - V[None]) * (1 - pv[:, None]), -1)
    T = P_h_given_v @ P_v_given_h
    torch.testing.assert_close(T.sum(1), torch.ones(len(V), dtype=D))
    return float(torch.linalg.eigvals(T).abs().sort(descending=True).values[1])


GIBBS_N, GIBBS_K = 30_000, 20


def gibbs_params():
    return params(4, 3, seed=16, scale=1.2)[:3]


def chain_in_chunks(v0, W, b_v, b_h, k, g, rows, clamp=None):
    """``gibbs_chain`` over ``rows``-row slices of the chains (per-row biases and clamp values
    sliced alike): small calls take the pre-drawn logistic-noise path, one big call the
    per-step sampler. Returns the concatenated GibbsState."""

    def part(x, sl):
        return x[sl] if x.dim() == 2 and x.shape[0] == v0.shape[0] else x

    outs = []
    for start in range(0, v0.shape[0], rows):
        sl = slice(start, start + rows)
        c = None if clamp is None else (clamp[0], part(clamp[1], sl))
        outs.append(rbm.gibbs_chain(v0[sl], W, part(b_v, sl), part(b_h, sl), k, g, clamp=c))
    return rbm.GibbsState(*(torch.cat(xs) for xs in zip(*outs, strict=True)))


# "one call": 30,000 chains × 7 units → the per-step sampler; "chunks" of 2,000 (14,000 units
# per call, float32: paired uniforms) → pre-drawn logistic noise; "few rows" (16 chains per
# call) → the NumPy loop. All must be exact.
CHAIN_PATHS = {
    "one call": (GIBBS_N, D),
    "chunks": (2_000, torch.float32),
    "few rows": (16, torch.float32),
}


@pytest.fixture(scope="module", params=list(CHAIN_PATHS))
def gibbs_run(request):
    rows, dtype = CHAIN_PATHS[request.param]
    W, b_v, b_h = (x.to(dtype) for x in gibbs_params())
    g = torch.Generator().manual_seed(17)
    v0 = torch.zeros(GIBBS_N, 4, dtype=dtype)  # a bad start on purpose: every chain in one state
    out = chain_in_chunks(v0, W, b_v, b_h, GIBBS_K, g, rows)
    return tuple(x.double() for x in (W, b_v, b_h)), out


def test_gibbs_chain_mixes_within_k():
    # Justifies GIBBS_K: the start's influence has decayed far below the chi-square resolution.
    assert transition_second_eigenvalue(*gibbs_params()) ** GIBBS_K < 1e-6


def test_gibbs_chain_reaches_exact_distribution(gibbs_run):
    (W, b_v, b_h), out = gibbs_run
    assert out.v.shape == (GIBBS_N, 4) and out.h_mean.shape == (GIBBS_N, 3)
    assert chi2_pvalue(out.v, exact_visible_probs(W, b_v, b_h)) > P_MIN


def test_gibbs_chi_square_has_power(gibbs_run):
    (W, b_v, b_h), out = gibbs_run
    probs = exact_visible_probs(W, b_v, b_h)
    other = exact_visible_probs(*params(4, 3, seed=99, scale=1.2)[:3])
    assert chi2_pvalue(out.v, other) < P_MIN
    # A subtle error is caught too: one weight off by 0.5, or 10% of the mass spread uniformly.
    W_bad = W.clone()
    W_bad[0, 0] += 0.5
    assert chi2_pvalue(out.v, exact_visible_probs(W_bad, b_v, b_h)) < P_MIN
    assert chi2_pvalue(out.v, 0.9 * probs + 0.1 / 16) < P_MIN


@pytest.mark.parametrize("path", list(CHAIN_PATHS))
def test_gibbs_chain_per_example_biases(path):
    # Chains with two different bias sets in one batch (as frames of a temporal model): each
    # group reaches its own RBM's distribution.
    N, rows = 20_000, min(CHAIN_PATHS[path][0], 20_000)
    W, b_v1, b_h1 = gibbs_params()
    _, b_v2, b_h2, _ = params(4, 3, seed=23)
    group = torch.arange(N) % 2
    B_v = torch.stack([b_v1, b_v2])[group]
    B_h = torch.stack([b_h1, b_h2])[group]
    v0 = torch.zeros(N, 4, dtype=D)
    out = chain_in_chunks(v0, W, B_v, B_h, GIBBS_K, torch.Generator().manual_seed(24), rows)
    p1, p2 = exact_visible_probs(W, b_v1, b_h1), exact_visible_probs(W, b_v2, b_h2)
    assert chi2_pvalue(out.v[group == 0], p1) > P_MIN
    assert chi2_pvalue(out.v[group == 1], p2) > P_MIN
    assert chi2_pvalue(out.v[group == 1], p1) < P_MIN  # the groups really differ


def test_gibbs_chain_gaussian_marginals():
    # v's marginal is the mixture Σ_h P(h) N(b_v + σ W h, σ²) with P(h) ∝ exp(−F(h)), where F(h) is
    # the Gaussian integral written out independently (see test_free_energy_hidden_* above).
    n_v, n_h, N = 2, 3, 20_000
    W, b_v, b_h, ls = params(n_v, n_h, seed=18, gaussian=True, scale=0.8)
    sigma = torch.exp(ls)
    H = states(n_h)
    a = H @ W.T
    log_w = H @ b_h + (b_v / sigma * a + 0.5 * a**2).sum(-1)
    w = torch.softmax(log_w, 0).numpy()
    means = (b_v + sigma * a).numpy()
    g = torch.Generator().manual_seed(19)
    v0 = torch.zeros(N, n_v, dtype=D)
    v = rbm.gibbs_chain(v0, W, b_v, b_h, 30, generator=g, log_sigma=ls).v.numpy()
    for i in range(n_v):
        s = float(sigma[i])

        def cdf(x, i=i, s=s):
            return (w * stats.norm.cdf((np.asarray(x)[..., None] - means[:, i]) / s)).sum(-1)

        assert stats.kstest(v[:, i], cdf).pvalue > P_MIN

        # Power: the same test rejects the mixture with its weights reversed.
        def wrong(x, i=i, s=s):
            return (w[::-1] * stats.norm.cdf((np.asarray(x)[..., None] - means[:, i]) / s)).sum(-1)

        assert stats.kstest(v[:, i], wrong).pvalue < P_MIN


@pytest.mark.parametrize("rows", [24_000, 6_000, 16])  # per-step; logistic noise; NumPy loop
def test_gibbs_chain_clamp_matches_exact_conditional(rows):
    n_v, n_h, N = 5, 3, 24_000
    W, b_v, b_h, _ = params(n_v, n_h, seed=20, scale=1.2)
    mask = torch.tensor([True, False, True, False, False])
    # Two clamp patterns in one batch: per-chain values (N, n_v).
    patterns = torch.tensor([[1.0, 0, 0.0, 0, 0], [0.0, 0, 1.0, 0, 0]], dtype=D)
    group = torch.arange(N) % 2
    values = patterns[group]
    g = torch.Generator().manual_seed(21)
    v0 = (torch.rand(N, n_v, generator=g) < 0.5).to(D)  # clamped units start wrong half the time
    for k in (1, 2, 25):
        out = chain_in_chunks(v0, W, b_v, b_h, k, g, rows, clamp=(mask, values))
        assert torch.equal(out.v[:, mask], values[:, mask]), f"clamped units moved at k={k}"
    # Free units: chi-square against P(v_free | v_clamped) from the joint.
    V = states(n_v)
    log_p_v = torch.logsumexp(joint_neg_energy(W, b_v, b_h), 1)
    for c in range(2):
        keep = (V[:, mask] == patterns[c, mask]).all(1)
        cond = torch.softmax(log_p_v[keep], 0).numpy()  # ordered as states(3) over free units
        free = out.v[group == c][:, ~mask]
        assert chi2_pvalue(free, cond) > P_MIN
        # Power: the unclamped marginal of the free units differs and is rejected.
        marg = torch.softmax(log_p_v, 0).reshape(2, 2, 2, 2, 2).sum((0, 2)).flatten().numpy()
        assert chi2_pvalue(free, marg) < P_MIN


def test_gibbs_chain_seeded_no_grad_dtype_and_step_composition():
    W, b_v, b_h, _ = params(4, 3, seed=22)
    W = W.float().requires_grad_()
    b_v, b_h = b_v.float(), b_h.float()
    v0 = (torch.rand(10, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()

    def run(k):
        return rbm.gibbs_chain(v0, W, b_v, b_h, k, generator=torch.Generator().manual_seed(0))

    a, b = run(3), run(3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(t.requires_grad for t in a)  # samples are constants for CD / PCD
    assert a.v.dtype == a.v_mean.dtype == a.h_mean.dtype == torch.float32
    assert a.v.device == v0.device
    with torch.no_grad():
        # k steps then read h_mean: it is P(h|v) at the state after k − 1 steps: v0 for k = 1,
        # else one row of hidden_mean over all binary v.
        torch.testing.assert_close(run(1).h_mean, rbm.hidden_mean(v0, W, b_h))
        h_table = rbm.hidden_mean(states(4).float(), W, b_h)
        h_dist = (a.h_mean[:, None, :] - h_table[None]).abs().amax(-1).amin(-1)
        assert h_dist.max() < 1e-6
        # v_mean is P(v|h) for some binary h: it is one row of visible_mean over all h.
        table = rbm.visible_mean(states(3).float(), W, b_v)
        dist = (a.v_mean[:, None, :] - table[None]).abs().amax(-1).amin(-1)
        assert dist.max() < 1e-6


@pytest.mark.parametrize("k", [0, -1])
def test_gibbs_chain_rejects_k_below_one(k):
    W, b_v, b_h, _ = params(2, 2, seed=0)
    with pytest.raises(ValueError, match=r"gibbs_chain k.*≥ 1.*got " + str(k)):
        rbm.gibbs_chain(torch.zeros(1, 2, dtype=D), W, b_v, b_h, k)


@pytest.mark.parametrize("n", [1_000, 200_001])  # torch's uniform_; paired 23-bit SFC64 words
def test_uniform_is_exact_on_its_grid_and_seeded(n):
    g = torch.Generator().manual_seed(3)
    like = torch.empty(0)
    u = rbm.uniform((n,), like, g)
    assert u.shape == (n,) and u.dtype == torch.float32 and u.is_contiguous()
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    k = (u.double() * 2**23).numpy()
    if n > rbm._PAIRED_DRAWS_FROM:  # the paired path: exactly k · 2⁻²³, every bit fair
        assert np.array_equal(k, np.floor(k))
        bits = (k.astype(np.int64)[:, None] >> np.arange(23)) & 1
        z = (bits.mean(0) - 0.5) / math.sqrt(0.25 / n)
        assert np.abs(z).max() < 4.5  # 23 bits, two-sided: a fair draw fails ~1 in 10⁴
        # Neighbouring draws (the two halves of one word, and across words) are uncorrelated.
        assert abs(np.corrcoef(u[:-1].numpy(), u[1:].numpy())[0, 1]) < 4.5 / math.sqrt(n)
    assert stats.kstest(u.numpy(), "uniform").pvalue > P_MIN
    again = rbm.uniform((n,), like, torch.Generator().manual_seed(3))
    assert torch.equal(u, again)  # reproducible from the explicit generator
    assert not torch.equal(u, rbm.uniform((n,), like, g))  # and the generator advanced
