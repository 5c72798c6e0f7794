"""Partition functions: exact enumeration against brute force and quadrature; AIS and reverse AIS
against the exact log Z of tiny RBMs (convergence, unbiasedness of Z, the sides of the bias)."""

from __future__ import annotations

import math

import pytest
import torch

from rnnrbm.core.partition import (
    MAX_ENUMERATED_UNITS,
    all_binary_states,
    base_rate_visible_bias,
    default_betas,
    exact_is_affordable,
    log_partition_ais,
    log_partition_exact,
    log_partition_reverse_ais,
)
from rnnrbm.core.rbm import free_energy
from rnnrbm.validation import InputError

F64 = torch.float64


def random_rbm(n_v, n_h, seed, scale=1.0, R=None, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    lead = () if R is None else (R,)
    W = scale * torch.randn(n_v, n_h, generator=g, dtype=dtype)
    b_v = 0.5 * torch.randn(*lead, n_v, generator=g, dtype=dtype)
    b_h = 0.5 * torch.randn(*lead, n_h, generator=g, dtype=dtype)
    return W, b_v, b_h


def exact_samples(W, b_v, b_h, n, seed):
    """Exact samples of a tiny Bernoulli RBM: enumerate v, then torch.multinomial."""
    V = all_binary_states(W.shape[0], dtype=F64)
    log_p = -free_energy(V, W, b_v, b_h) - log_partition_exact(W, b_v, b_h)
    idx = torch.multinomial(
        log_p.exp(), n, replacement=True, generator=torch.Generator().manual_seed(seed)
    )
    return V[idx]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- enumeration


@pytest.mark.parametrize("n", [0, 1, 3, 6])
def test_all_binary_states_matches_oracle_and_slices(oracle, n):
    full = all_binary_states(n, dtype=F64)
    assert full.shape == (1 << n, n)
    if n > 0:  # the oracle cannot build the single empty state
        assert torch.equal(full, oracle.states(n))
    cut = (1 << n) // 3
    parts = [all_binary_states(n, dtype=F64, stop=cut), all_binary_states(n, dtype=F64, start=cut)]
    assert torch.equal(torch.cat(parts), full)
    assert all_binary_states(n).dtype == torch.float32


def test_all_binary_states_rejects_bad_ranges():
    with pytest.raises(InputError, match="start/stop"):
        all_binary_states(3, start=5, stop=4)
    with pytest.raises(InputError, match="n: expected an int"):
        all_binary_states(-1)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (8, 8), (1, 7), (7, 1), (6, 2), (2, 8)])
def test_exact_log_z_matches_joint_brute_force(oracle, shape):
    W, b_v, b_h = random_rbm(*shape, seed=sum(shape))
    got = log_partition_exact(W, b_v, b_h)
    assert got.dtype == F64 and got.shape == ()
    assert abs(float(got) - oracle.joint_log_z(W, b_v, b_h)) < 1e-9


@pytest.mark.parametrize("shape", [(4, 7), (7, 4)])
def test_exact_batched_equals_loop_and_chunking_is_invisible(shape):
    R = 5
    W, b_v, b_h = random_rbm(*shape, seed=3, R=R)
    looped = torch.stack([log_partition_exact(W, b_v[r], b_h[r]) for r in range(R)])
    assert torch.allclose(log_partition_exact(W, b_v, b_h), looped, rtol=0, atol=1e-12)
    assert torch.allclose(log_partition_exact(W, b_v, b_h, chunk_size=3), looped, atol=1e-12)
    # One batched bias with the other shared broadcasts to R rows.
    shared = torch.stack([log_partition_exact(W, b_v[r], b_h[0]) for r in range(R)])
    assert torch.allclose(log_partition_exact(W, b_v, b_h[0]), shared, atol=1e-12)


def test_exact_float32_inputs_are_summed_in_float64(oracle):
    W, b_v, b_h = random_rbm(6, 9, seed=11)
    got = log_partition_exact(W.float(), b_v.float(), b_h.float())
    assert got.dtype == F64
    want = oracle.joint_log_z(W.float().double(), b_v.float().double(), b_h.float().double())
    assert abs(float(got) - want) < 1e-9


def test_exact_log_z_gradient_is_the_model_expectation(oracle):
    # ∂ log Z / ∂b_v = E[v] and ∂ log Z / ∂W = E[v hᵀ], by enumerating both layers.
    W, b_v, b_h = (t.requires_grad_() for t in random_rbm(5, 3, seed=17))
    g_w, g_bv = torch.autograd.grad(log_partition_exact(W, b_v, b_h), (W, b_v))
    V, H = oracle.states(5), oracle.states(3)
    with torch.no_grad():
        neg_e = (V @ b_v)[:, None] + (H @ b_h)[None, :] + V @ W @ H.T
        p = torch.softmax(neg_e.flatten(), 0).reshape(len(V), len(H))
    assert torch.allclose(g_bv, p.sum(1) @ V, atol=1e-12)
    assert torch.allclose(g_w, V.T @ p @ H, atol=1e-12)


def _gaussian_log_integrand(v, W, b_v, b_h, log_sigma):
    """log Σ_h exp(−E(v, h)) by enumerating h, written from the energy (independent of core.rbm)."""
    sigma = log_sigma.exp()
    H = all_binary_states(W.shape[1], dtype=F64)
    quad = -(((v - b_v) / sigma) ** 2).sum(-1) / 2  # (N,)
    neg_e = quad[:, None] + (H @ b_h)[None, :] + (v / sigma) @ W @ H.T
    return torch.logsumexp(neg_e, dim=1)


def test_gaussian_exact_log_z_matches_2d_quadrature():
    W, b_v, b_h = random_rbm(2, 3, seed=5, scale=0.8)
    log_sigma = torch.tensor([0.3, -0.4], dtype=F64)
    sigma = log_sigma.exp()
    axes = [
        torch.linspace(
            float(b_v[i] - 14 * sigma[i]), float(b_v[i] + 14 * sigma[i]), 1201, dtype=F64
        )
        for i in range(2)
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    log_f = _gaussian_log_integrand(grid, W, b_v, b_h, log_sigma).reshape(1201, 1201)
    top = log_f.max()
    integral = torch.trapezoid(torch.trapezoid((log_f - top).exp(), axes[1], dim=1), axes[0])
    want = float(top + integral.log())
    assert abs(float(log_partition_exact(W, b_v, b_h, log_sigma)) - want) < 1e-8


def test_gaussian_exact_density_integrates_to_one_in_1d():
    W, b_v, b_h = random_rbm(1, 4, seed=8, scale=1.5)
    log_sigma = torch.tensor([0.2], dtype=F64)
    log_z = log_partition_exact(W, b_v, b_h, log_sigma)
    v = torch.linspace(-30, 30, 60001, dtype=F64)[:, None]
    density = torch.exp(-free_energy(v, W, b_v, b_h, log_sigma) - log_z)
    assert abs(float(torch.trapezoid(density, v[:, 0])) - 1.0) < 1e-9


def test_exact_refuses_more_than_the_enumeration_limit():
    assert MAX_ENUMERATED_UNITS == 25
    W = torch.zeros(30, 26)
    with pytest.raises(InputError, match=r"n_hidden=26.*at most 25 units.*log_partition_ais"):
        log_partition_exact(W, torch.zeros(30), torch.zeros(26))
    with pytest.raises(InputError, match=r"n_visible=26.*log_partition_ais"):
        log_partition_exact(W.T, torch.zeros(26), torch.zeros(30))
    # Gaussian visibles always enumerate the hiddens, however few visibles there are.
    with pytest.raises(InputError, match=r"n_hidden=26.*Gaussian"):
        log_partition_exact(torch.zeros(2, 26), torch.zeros(2), torch.zeros(26), torch.zeros(2))


def test_exact_is_affordable_is_the_one_auto_rule():
    # the smaller layer is enumerated: ≤ 20 units and rows × 2^units ≤ 2^28
    assert exact_is_affordable(88, 20) and not exact_is_affordable(88, 21)
    assert exact_is_affordable(20, 500) and not exact_is_affordable(21, 500)
    assert exact_is_affordable(88, 16, rows=2**12) and not exact_is_affordable(88, 16, 2**12 + 1)
    assert exact_is_affordable(88, 20, rows=2**8) and not exact_is_affordable(88, 20, 2**8 + 1)
    # Gaussian visibles: the hiddens are enumerated, however few visibles there are
    assert exact_is_affordable(2, 20, gaussian=True) and not exact_is_affordable(
        2, 21, gaussian=True
    )
    # within what log_partition_exact accepts
    assert not exact_is_affordable(MAX_ENUMERATED_UNITS + 1, 100)


def test_exact_rejects_mismatched_biases():
    W, b_v, b_h = random_rbm(3, 4, seed=0, R=2)
    with pytest.raises(InputError, match="b_h"):
        log_partition_exact(W, b_v, b_h[:, :3])
    with pytest.raises(InputError, match="same number of rows"):
        log_partition_exact(W, b_v, b_h.repeat(2, 1))


# ----------------------------------------------------------------------------- schedules, base


def test_default_betas_follows_the_three_piece_schedule():
    b = default_betas(1000)
    assert b.shape == (1001,) and b.dtype == F64
    assert float(b[0]) == 0.0 and float(b[-1]) == 1.0 and bool((b.diff() > 0).all())
    steps = b.diff()
    assert int((b[1:] <= 0.5 + 1e-12).sum()) == 69  # 1000 · 1000/14500
    assert int(((b[1:] > 0.5 + 1e-12) & (b[1:] <= 0.9 + 1e-12)).sum()) == 276
    assert float(steps[-1]) < float(steps[0]) / 40  # densest near β = 1
    for n in (1, 2, 3, 7):
        s = default_betas(n)
        assert s.shape == (n + 1,) and float(s[0]) == 0 and float(s[-1]) == 1
        assert bool((s.diff() > 0).all())


def test_base_rate_visible_bias_values():
    data = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    got = base_rate_visible_bias(data)  # eps = 1 pseudo-count: p = (count + 1) / (4 + 2)
    want = torch.tensor([math.log(4 / 2), math.log(2 / 4), math.log(1 / 5)])
    assert torch.allclose(got, want, atol=1e-6) and got.dtype == torch.float32
    assert torch.allclose(
        base_rate_visible_bias(data, eps=0.5)[2], torch.tensor(math.log(0.5 / 4.5))
    )
    assert torch.equal(base_rate_visible_bias(data * 3 - 1, gaussian=True), (data * 3 - 1).mean(0))
    with pytest.raises(InputError, match=r"data: expected values in \[0, 1\]"):
        base_rate_visible_bias(data * 2)


# ----------------------------------------------------------------------------- AIS


def test_ais_agrees_with_exact_within_three_standard_errors():
    # 4,000 runs make the s.e. ~0.0025, small enough that a transition which leaves a slightly
    # wrong distribution invariant (e.g. h sampled at 0.97·β) shows up as a 6-s.e. bias.
    W, b_v, b_h = random_rbm(8, 6, seed=1)
    exact = float(log_partition_exact(W, b_v, b_h))
    res = log_partition_ais(W, b_v, b_h, n_runs=4000, n_betas=1000, generator=gen(0))
    assert res.log_z.shape == (1,) and res.log_weights.shape == (1, 4000)
    assert res.log_z.dtype == F64 and res.n_betas == 1000 and res.n_runs == 4000
    assert 0 < float(res.log_z_se) < 0.004
    assert abs(float(res.log_z) - exact) < 3 * float(res.log_z_se)
    # The estimate is exactly base + log mean exp(log w).
    manual = res.base_log_z + torch.logsumexp(res.log_weights, 1) - math.log(4000)
    assert torch.allclose(res.log_z, manual, atol=1e-12)
    assert abs(float(res.base_log_z) - 6 * math.log(2) - 8 * math.log(2)) < 1e-12  # b_A = 0


def test_ais_error_shrinks_with_more_betas():
    # 16 independent replicates (identical bias rows) of a 20-run estimate at each schedule length.
    W, b_v, b_h = random_rbm(8, 6, seed=2)
    exact = log_partition_exact(W, b_v, b_h)
    rows = (b_v.expand(16, -1), b_h.expand(16, -1))
    err = [
        float(
            (log_partition_ais(W, *rows, n_runs=20, n_betas=k, generator=gen(k)).log_z - exact)
            .abs()
            .mean()
        )
        for k in (100, 1000, 10000)
    ]
    assert err[0] > err[1] > err[2], err
    assert err[2] < 0.02


def test_ais_batched_over_hundreds_of_bias_rows():
    R = 300
    W, b_v, b_h = random_rbm(7, 5, seed=4, R=R)
    exact = log_partition_exact(W, b_v, b_h)
    res = log_partition_ais(W, b_v, b_h, n_runs=20, n_betas=200, generator=gen(1))
    assert res.log_z.shape == (R,) and res.log_weights.shape == (R, 20)
    z = (res.log_z - exact) / res.log_z_se
    assert float((z.abs() < 3).float().mean()) >= 0.95
    # Rows are not mixed up: a looped row gives a statistically identical answer.
    assert float((res.log_z - exact).abs().max()) < 0.5


def test_ais_z_is_unbiased():
    # Each of 4,000 single-run weights is an unbiased estimate of Z / Z_A: their mean over
    # exp(log w + log Z_A − log Z) is 1 within 4 standard errors of that mean, while a coarse
    # schedule makes the mean of log w visibly (many s.e.) below log Z − log Z_A.
    W, b_v, b_h = random_rbm(8, 6, seed=6)
    exact = log_partition_exact(W, b_v, b_h)
    res = log_partition_ais(W, b_v.expand(400, -1), b_h, n_runs=10, n_betas=100, generator=gen(2))
    ratio = torch.exp(res.log_weights + res.base_log_z[:, None] - exact).flatten()
    sem = float(ratio.std()) / math.sqrt(ratio.numel())
    assert sem < 0.02
    assert abs(float(ratio.mean()) - 1.0) < 4 * sem
    log_ratio = ratio.log()
    assert float(log_ratio.mean()) < -4 * float(log_ratio.std()) / math.sqrt(log_ratio.numel())


def test_reverse_ais_overestimates_and_forward_underestimates():
    # With M runs the bias of log Ẑ is ≈ ∓ s²/(2M) for a per-run log-weight sd s, and the
    # replicate mean has s.e. s/√(MR): the sign test has z ≈ s√R/(2√M). At 50 betas s ≈ 0.6
    # here, so M = 2, R = 1000 gives z ≈ 7 and the 3-s.e. margins below hold reliably.
    W, b_v, b_h = random_rbm(8, 6, seed=7)
    exact = float(log_partition_exact(W, b_v, b_h))
    R, M = 1000, 2
    rows = (b_v.expand(R, -1), b_h.expand(R, -1))
    init = exact_samples(W, b_v, b_h, R * M, seed=3).reshape(R, M, 8)
    fwd = log_partition_ais(W, *rows, n_runs=M, n_betas=50, generator=gen(3)).log_z - exact
    rev = log_partition_reverse_ais(W, *rows, init, n_betas=50, generator=gen(4)).log_z - exact
    for err, sign in ((fwd, -1), (rev, +1)):
        sem = float(err.std()) / math.sqrt(R)
        assert sign * float(err.mean()) > 3 * sem, (float(err.mean()), sem)


def test_half_runs_log_z_moves_the_way_more_runs_do():
    """Halving the runs makes forward AIS read lower and reverse AIS higher on average (the
    log-mean-exp bias grows); each half's figure is the same formula on its runs."""
    W, b_v, b_h = random_rbm(8, 6, seed=7)
    R, M = 400, 8
    rows = (b_v.expand(R, -1), b_h.expand(R, -1))
    init = exact_samples(W, b_v, b_h, R * M, seed=3).reshape(R, M, 8)
    fwd = log_partition_ais(W, *rows, n_runs=M, n_betas=50, generator=gen(3))
    rev = log_partition_reverse_ais(W, *rows, init, n_betas=50, generator=gen(4))
    assert not fwd.reverse and rev.reverse
    for res, sign in ((fwd, +1), (rev, -1)):
        gap = res.log_z - res.log_z_from_half_runs()
        assert sign * float(gap.mean()) > 3 * float(gap.std()) / math.sqrt(R)
    halves = fwd.log_weights.reshape(R, 2, M // 2)
    manual = fwd.base_log_z + (torch.logsumexp(halves, -1) - math.log(M // 2)).mean(-1)
    torch.testing.assert_close(fwd.log_z_from_half_runs(), manual, rtol=0, atol=1e-12)


def test_reverse_ais_from_exact_samples_is_accurate_and_shares_samples():
    W, b_v, b_h = random_rbm(8, 6, seed=9)
    exact = float(log_partition_exact(W, b_v, b_h))
    init = exact_samples(W, b_v, b_h, 200, seed=5)
    res = log_partition_reverse_ais(W, b_v, b_h, init, n_betas=1000, generator=gen(5))
    assert res.n_runs == 200 and res.log_weights.shape == (1, 200)
    assert abs(float(res.log_z) - exact) < 3 * float(res.log_z_se)
    manual = res.base_log_z - (torch.logsumexp(-res.log_weights, 1) - math.log(200))
    assert torch.allclose(res.log_z, manual, atol=1e-12)
    # (M, n_v) samples are shared by every RBM of a batch.
    two = log_partition_reverse_ais(W, b_v.expand(2, -1), b_h, init, n_betas=10, generator=gen(5))
    assert two.log_weights.shape == (2, 200)


def test_reverse_ais_batched_with_per_rbm_samples():
    R, M = 40, 30
    W, b_v, b_h = random_rbm(7, 5, seed=15, R=R)
    exact = log_partition_exact(W, b_v, b_h)
    init = torch.stack([exact_samples(W, b_v[r], b_h[r], M, seed=r) for r in range(R)])
    res = log_partition_reverse_ais(W, b_v, b_h, init, n_betas=300, generator=gen(10))
    z = (res.log_z - exact) / res.log_z_se
    assert float((z.abs() < 3).float().mean()) >= 0.9
    assert float((res.log_z - exact).abs().max()) < 0.3


@pytest.mark.parametrize("gaussian", [False, True])
def test_one_step_reverse_ais_is_importance_sampling_on_the_given_rows(gaussian):
    # With betas = [0, 1] there is no transition: each run's log w is exactly
    # log p_B*(v) − log p_A*(v) = −F(v) − log p_A*(v) at its own init row, for its own RBM.
    R, M, n_v, n_h = 3, 5, 4, 3
    W, b_v, b_h = random_rbm(n_v, n_h, seed=16, R=R)
    log_sigma = torch.tensor([0.2, -0.1, 0.0, 0.3], dtype=F64) if gaussian else None
    base = torch.randn(R, n_v, generator=gen(2), dtype=F64)
    init = torch.randint(0, 2, (R, M, n_v), generator=gen(3)).to(F64)
    if gaussian:
        init = init + torch.randn(R, M, n_v, generator=gen(4), dtype=F64)

    def want(v):  # v (R, M, n_v)
        neg_f = -free_energy(v, W, b_v[:, None], b_h[:, None], log_sigma)
        if gaussian:
            log_p_a = -(((v - base[:, None]) / log_sigma.exp()) ** 2).sum(-1) / 2
        else:
            log_p_a = (v * base[:, None]).sum(-1)
        return neg_f - log_p_a - n_h * math.log(2)

    kw = dict(betas=torch.tensor([0.0, 1.0]), base_visible_bias=base)
    res = log_partition_reverse_ais(W, b_v, b_h, init, log_sigma, **kw)
    assert torch.allclose(res.log_weights, want(init), atol=1e-12)
    shared = log_partition_reverse_ais(W, b_v, b_h, init[0], log_sigma, **kw)  # (M, n_v)
    assert torch.allclose(shared.log_weights, want(init[:1].expand(R, -1, -1)), atol=1e-12)


def test_gaussian_visible_ais_agrees_with_exact():
    W, b_v, b_h = random_rbm(6, 5, seed=10, scale=0.5)
    log_sigma = 0.3 * torch.randn(6, generator=gen(1), dtype=F64)
    exact = float(log_partition_exact(W, b_v, b_h, log_sigma))
    base = b_v + 0.3  # a base mean near the data
    res = log_partition_ais(
        W, b_v, b_h, log_sigma, n_runs=200, n_betas=500, base_visible_bias=base, generator=gen(6)
    )
    want_base = float((log_sigma + 0.5 * math.log(2 * math.pi)).sum() + 5 * math.log(2))
    assert abs(float(res.base_log_z) - want_base) < 1e-12
    assert abs(float(res.log_z) - exact) < 3 * float(res.log_z_se) and float(res.log_z_se) < 0.05


def test_float32_ais_with_base_rate_bias_and_small_chunks():
    W, b_v, b_h = random_rbm(8, 6, seed=12)
    exact = float(log_partition_exact(W, b_v, b_h))
    data = exact_samples(W, b_v, b_h, 500, seed=6)
    base = base_rate_visible_bias(data.float())
    res = log_partition_ais(
        W.float(),
        b_v.float(),
        b_h.float(),
        n_runs=200,
        n_betas=500,
        base_visible_bias=base,
        generator=gen(7),
        chunk_rows=37,
    )
    assert res.log_z.dtype == F64
    assert abs(float(res.log_z) - exact) < 3 * float(res.log_z_se)


def test_ais_is_deterministic_and_independent_of_thread_count():
    W, b_v, b_h = random_rbm(8, 6, seed=13, R=3, dtype=torch.float32)
    kw = dict(n_runs=40, n_betas=30, chunk_rows=16)  # 8 chunks shared among the workers
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = log_partition_ais(W, b_v, b_h, generator=gen(8), **kw)
        assert torch.get_num_threads() == 2  # the caller's setting is restored
        torch.set_num_threads(1)
        b = log_partition_ais(W, b_v, b_h, generator=gen(8), **kw)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(a.log_weights, b.log_weights)
    c = log_partition_ais(W, b_v, b_h, generator=gen(9), **kw)
    assert not torch.equal(a.log_weights, c.log_weights)


def test_ais_input_errors():
    W, b_v, b_h = random_rbm(4, 3, seed=0)
    with pytest.raises(InputError, match="betas: expected a 1-D strictly increasing"):
        log_partition_ais(W, b_v, b_h, betas=torch.tensor([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(InputError, match="betas"):
        log_partition_ais(W, b_v, b_h, betas=torch.tensor([0.1, 1.0]))
    with pytest.raises(InputError, match="n_runs"):
        log_partition_ais(W, b_v, b_h, n_runs=0)
    with pytest.raises(InputError, match="base_visible_bias"):
        log_partition_ais(W, b_v, b_h, base_visible_bias=torch.zeros(5))
    with pytest.raises(InputError, match="init_visible"):
        log_partition_reverse_ais(W, b_v, b_h, torch.zeros(3, 5))
    with pytest.raises(InputError, match="init_visible: expected binary"):
        log_partition_reverse_ais(W, b_v, b_h, torch.full((3, 4), 0.5))
    # An explicit schedule is used as given.
    res = log_partition_ais(W, b_v, b_h, n_runs=3, betas=torch.linspace(0, 1, 11), generator=gen(0))
    assert res.n_betas == 10 and bool(torch.isfinite(res.log_z_se).all())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ais_on_cuda_agrees_with_exact():
    W, b_v, b_h = (t.cuda() for t in random_rbm(8, 6, seed=14))
    exact = float(log_partition_exact(W, b_v, b_h))
    res = log_partition_ais(
        W, b_v, b_h, n_runs=200, n_betas=500, generator=torch.Generator("cuda").manual_seed(0)
    )
    assert res.log_z.device.type == "cuda"
    assert abs(float(res.log_z) - exact) < 3 * float(res.log_z_se)
