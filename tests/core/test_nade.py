"""NADE frame distribution: exact oracles on tiny models (enumeration, naive loops, gradcheck,
chi-square on ancestral samples), batching, chunking, determinism and error messages."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from rnnrbm.core import nade
from rnnrbm.core.nade import (
    nade_conditionals,
    nade_expected_visible,
    nade_hidden_states,
    nade_log_prob,
    nade_logits,
    nade_sample,
)
from rnnrbm.validation import InputError

F64 = torch.float64


def make_model(n_v, n_h, rows=None, scale=1.0, seed=0, dtype=F64):
    """Random NADE parameters; biases shared when ``rows`` is None, else ``(rows, n)``."""
    g = torch.Generator().manual_seed(seed)
    shape = () if rows is None else (rows,)
    W = scale * torch.randn(n_v, n_h, generator=g, dtype=dtype)
    V = scale * torch.randn(n_v, n_h, generator=g, dtype=dtype)
    b_v = scale * torch.randn(*shape, n_v, generator=g, dtype=dtype)
    b_h = scale * torch.randn(*shape, n_h, generator=g, dtype=dtype)
    return W, V, b_v, b_h


def random_v(N, n_v, seed=1, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, n_v, generator=g) < 0.5).to(dtype)


def naive(v, W, V, b_v, b_h):
    """Independent scalar reference: (log p (N,), conditionals (N, n_v), hiddens (N, n_v, n_h))."""
    N, n_v = v.shape
    n_h = W.shape[1]
    b_v = b_v.expand(N, n_v)
    b_h = b_h.expand(N, n_h)
    logp, cond, hid = [], [], []
    for n in range(N):
        total, c_row, h_row = 0.0, [], []
        for i in range(n_v):
            h = []
            for j in range(n_h):
                pre = float(b_h[n, j]) + sum(float(v[n, k] * W[k, j]) for k in range(i))
                h.append(1.0 / (1.0 + math.exp(-pre)))
            a = float(b_v[n, i]) + sum(float(V[i, j]) * h[j] for j in range(n_h))
            p = 1.0 / (1.0 + math.exp(-a))
            total += math.log(p) if float(v[n, i]) == 1.0 else math.log(1.0 - p)
            c_row.append(p)
            h_row.append(h)
        logp.append(total)
        cond.append(c_row)
        hid.append(h_row)
    return (
        torch.tensor(logp, dtype=F64),
        torch.tensor(cond, dtype=F64),
        torch.tensor(hid, dtype=F64),
    )


def state_index(v):
    """Row of ``v`` in the lexicographic enumeration of conftest's ``all_binary_states``."""
    n = v.shape[1]
    weights = 2 ** torch.arange(n - 1, -1, -1)
    return (v.long() * weights).sum(1)


def counts_of(v, n_states):
    return torch.bincount(state_index(v), minlength=n_states).double()


def exact_probs(oracle, W, V, b_v, b_h):
    states = oracle.states(W.shape[0])
    return nade_log_prob(states, W, V, b_v, b_h).exp()


# ---------------------------------------------------------------------------------------------
# Exact likelihood
# ---------------------------------------------------------------------------------------------
def test_sums_to_one_over_all_states_shared_biases(oracle):
    W, V, b_v, b_h = make_model(10, 6, scale=1.5)
    lp = nade_log_prob(oracle.states(10), W, V, b_v, b_h)
    assert lp.shape == (1024,)
    assert abs(float(torch.logsumexp(lp, 0))) < 1e-10


def test_sums_to_one_over_all_states_per_example_biases(oracle):
    W, V, b_v, b_h = make_model(8, 5, rows=3, scale=1.5)
    states = oracle.states(8)
    v = states.repeat(3, 1)  # every state under each of the 3 bias sets
    lp = nade_log_prob(v, W, V, b_v.repeat_interleave(256, 0), b_h.repeat_interleave(256, 0))
    totals = torch.logsumexp(lp.view(3, 256), 1)
    torch.testing.assert_close(totals, torch.zeros(3, dtype=F64), rtol=0, atol=1e-10)
    # The three bias sets really define different distributions.
    assert (lp.view(3, 256)[0] - lp.view(3, 256)[1]).abs().max() > 0.1


def test_single_visible_unit_is_normalised(oracle):
    W, V, b_v, b_h = make_model(1, 3)
    lp = nade_log_prob(oracle.states(1), W, V, b_v, b_h)
    assert abs(float(torch.logsumexp(lp, 0))) < 1e-12


@pytest.mark.parametrize("rows", [None, 7])
def test_matches_naive_loop(rows):
    W, V, b_v, b_h = make_model(6, 5, rows=rows, scale=1.3, seed=3)
    v = random_v(7, 6)
    ref_lp, ref_cond, ref_hid = naive(v, W, V, b_v, b_h)
    torch.testing.assert_close(nade_log_prob(v, W, V, b_v, b_h), ref_lp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        nade_conditionals(v, W, V, b_v, b_h), ref_cond, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(nade_hidden_states(v, W, b_h), ref_hid, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.sigmoid(nade_logits(v, W, V, b_v, b_h)), ref_cond, rtol=1e-12, atol=1e-12
    )


def sparse_frames(N, n_v, seed=2, dtype=F64):
    """Music-like frames (≤ n_v / 4 − 1 units on): the empty frame, the first and the last unit
    alone, then random sparse rows — the inputs of the segment pass."""
    g = torch.Generator().manual_seed(seed)
    v = (torch.rand(N, n_v, generator=g) < 0.1).to(dtype)
    v[:, : n_v // 4] *= 0  # keep the counts low enough for the segment pass...
    v[0], v[1], v[2] = 0, 0, 0
    v[1, 0] = v[2, -1] = v[3, 0] = v[3, -1] = 1  # ...but include both edges
    assert int(v.sum(1).max()) + 1 <= n_v // 4
    return v


@pytest.mark.parametrize("rows", [None, 9])
def test_segment_pass_matches_naive_loop_and_is_used(rows, monkeypatch):
    W, V, b_v, b_h = make_model(16, 5, rows=rows, scale=1.3, seed=4)
    v = sparse_frames(9, 16)
    used = []
    original = nade._logits_by_segment
    monkeypatch.setattr(nade, "_logits_by_segment", lambda *a: used.append(1) or original(*a))
    ref_lp, ref_cond, _ = naive(v, W, V, b_v, b_h)
    torch.testing.assert_close(nade_log_prob(v, W, V, b_v, b_h), ref_lp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.sigmoid(nade_logits(v, W, V, b_v, b_h)), ref_cond, rtol=1e-12, atol=1e-12
    )
    assert used  # the sparse frames really took the segment pass
    dense = nade._logits_dense(v, W, V, b_v, b_h)
    torch.testing.assert_close(nade_logits(v, W, V, b_v, b_h), dense, rtol=0, atol=1e-13)


@pytest.mark.parametrize("rows", [None, 4])
def test_segment_pass_gradcheck(rows):
    W, V, b_v, b_h = make_model(16, 3, rows=rows, seed=7)
    v = sparse_frames(4, 16, seed=5)
    params = tuple(t.clone().requires_grad_() for t in (W, V, b_v, b_h))
    assert torch.autograd.gradcheck(lambda *p: nade_log_prob(v, *p), params)


def test_dense_frames_and_soft_inputs_take_the_dense_pass(monkeypatch):
    monkeypatch.setattr(nade, "_logits_by_segment", lambda *a: pytest.fail("segment pass"))
    W, V, b_v, b_h = make_model(16, 5, seed=4)
    nade_log_prob(random_v(5, 16), W, V, b_v, b_h)  # half the units on
    nade_log_prob(sparse_frames(9, 16) * 0.5, W, V, b_v, b_h)  # not binary


def test_log_prob_is_finite_for_huge_logits():
    # a = ±200 with the "wrong" value observed: log p = 2·logσ(−200) ≈ −400, where a naive
    # log(1 + exp(200)) overflows to inf in float32.
    W = torch.zeros(2, 3)
    V = torch.zeros(2, 3)
    b_v = torch.tensor([200.0, -200.0])
    b_h = torch.zeros(3)
    lp = nade_log_prob(torch.tensor([[0.0, 1.0]]), W, V, b_v, b_h)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp, torch.tensor([-400.0]))


def test_bool_and_float_visibles_agree():
    W, V, b_v, b_h = make_model(5, 4)
    v = random_v(6, 5)
    torch.testing.assert_close(
        nade_log_prob(v.bool(), W, V, b_v, b_h), nade_log_prob(v, W, V, b_v, b_h)
    )


@pytest.mark.parametrize("rows", [None, 3])
@pytest.mark.parametrize("chunked", [False, True])
def test_gradcheck(rows, chunked):
    W, V, b_v, b_h = make_model(5, 4, rows=rows, seed=5)
    v = random_v(3, 5)
    kwargs = {"chunk_size": 2, "checkpoint": True} if chunked else {}
    params = tuple(t.clone().requires_grad_() for t in (W, V, b_v, b_h))
    assert torch.autograd.gradcheck(lambda *p: nade_log_prob(v, *p, **kwargs), params)


@pytest.mark.parametrize("rows", [None, 11])
@pytest.mark.parametrize("chunk_size", [1, 3, 10])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_chunking_gives_identical_values_and_gradients(rows, chunk_size, checkpoint):
    W, V, b_v, b_h = make_model(7, 6, rows=rows, seed=6)
    v = random_v(11, 7)

    def run(**kwargs):
        params = [t.clone().requires_grad_() for t in (W, V, b_v, b_h)]
        lp = nade_log_prob(v, *params, **kwargs)
        (lp * torch.arange(1.0, 12.0, dtype=F64)).sum().backward()
        return lp.detach(), [p.grad for p in params]

    ref_lp, ref_grads = run()
    lp, grads = run(chunk_size=chunk_size, checkpoint=checkpoint)
    torch.testing.assert_close(lp, ref_lp, rtol=0, atol=1e-13)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)


def test_automatic_chunking_above_the_element_budget(monkeypatch):
    W, V, b_v, b_h = make_model(6, 5, rows=9, seed=8)
    v = random_v(9, 6)
    ref = nade_log_prob(v, W, V, b_v, b_h)
    calls = []
    original = nade._logits_chunk

    def spy(*args):
        calls.append(args[0].shape[0])
        return original(*args)

    monkeypatch.setattr(nade, "_logits_chunk", spy)
    monkeypatch.setattr(nade, "_MAX_CHUNK_ELEMENTS", 2 * 6 * 5)  # 2 examples per chunk
    torch.testing.assert_close(nade_log_prob(v, W, V, b_v, b_h), ref, rtol=0, atol=1e-13)
    assert calls == [2, 2, 2, 2, 1]


def test_per_example_log_prob_equals_looping_over_examples():
    W, V, b_v, b_h = make_model(6, 5, rows=4, seed=9)
    v = random_v(4, 6)
    batched = nade_log_prob(v, W, V, b_v, b_h)
    looped = torch.cat([nade_log_prob(v[k : k + 1], W, V, b_v[k], b_h[k]) for k in range(4)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-13)


def test_one_row_biases_broadcast_like_shared():
    W, V, b_v, b_h = make_model(5, 4, seed=10)
    v = random_v(6, 5)
    torch.testing.assert_close(
        nade_log_prob(v, W, V, b_v[None], b_h[None]), nade_log_prob(v, W, V, b_v, b_h)
    )


# ---------------------------------------------------------------------------------------------
# Ancestral sampling
# ---------------------------------------------------------------------------------------------
N_SAMPLES = 20_000


def test_samples_follow_the_exact_distribution(oracle):
    W, V, b_v, b_h = make_model(4, 3, seed=11)
    p = exact_probs(oracle, W, V, b_v, b_h)
    assert float(p.min()) * N_SAMPLES > 5  # chi-square needs ≥ 5 expected per cell
    v, probs = nade_sample(W, V, b_v, b_h, n=N_SAMPLES, generator=torch.Generator().manual_seed(0))
    assert v.shape == probs.shape == (N_SAMPLES, 4)
    assert set(v.unique().tolist()) <= {0.0, 1.0}
    counts = counts_of(v, 16)
    assert chisquare(counts, N_SAMPLES * p).pvalue > 1e-3
    # Power: a model whose visible logits are shifted by 0.3 is rejected by the same counts.
    p_other = exact_probs(oracle, W, V, b_v + 0.3, b_h)
    assert chisquare(counts, N_SAMPLES * p_other).pvalue < 1e-6
    # The probabilities returned are the teacher-forced conditionals of the sample drawn.
    torch.testing.assert_close(probs, nade_conditionals(v, W, V, b_v, b_h), rtol=1e-12, atol=0)


def test_clamped_prefix_gives_the_exact_conditional(oracle):
    W, V, b_v, b_h = make_model(4, 3, scale=1.5, seed=12)
    mask = torch.tensor([True, True, False, False])
    values = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    g = torch.Generator().manual_seed(1)
    v, _ = nade_sample(W, V, b_v, b_h, n=N_SAMPLES, generator=g, clamp=(mask, values))
    assert (v[:, :2] == values[:2]).all()
    # Exact p(v_2, v_3 | v_0 = 1, v_1 = 0) by enumeration: states 0b1000..0b1011.
    joint = exact_probs(oracle, W, V, b_v, b_h)[8:12]
    cond = joint / joint.sum()
    counts = counts_of(v[:, 2:], 4)
    assert chisquare(counts, N_SAMPLES * cond).pvalue > 1e-3
    # Power: the unconditional marginal of (v_2, v_3) is rejected, so clamping really conditions.
    marginal = exact_probs(oracle, W, V, b_v, b_h).view(4, 4).sum(0)
    assert chisquare(counts, N_SAMPLES * marginal).pvalue < 1e-6


def test_clamping_a_late_unit_does_not_condition_earlier_units(oracle):
    # Documented limitation: free units before a clamped one follow NADE's prefix marginal,
    # not the conditional given the clamped unit.
    W, V, b_v, b_h = make_model(4, 3, scale=1.5, seed=13)
    mask = torch.tensor([False, False, False, True])
    values = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64)
    g = torch.Generator().manual_seed(2)
    v, _ = nade_sample(W, V, b_v, b_h, n=N_SAMPLES, generator=g, clamp=(mask, values))
    assert (v[:, 3] == 1).all()
    p = exact_probs(oracle, W, V, b_v, b_h).view(8, 2)
    counts = counts_of(v[:, :3], 8)
    assert chisquare(counts, N_SAMPLES * p.sum(1)).pvalue > 1e-3
    true_cond = p[:, 1] / p[:, 1].sum()
    assert chisquare(counts, N_SAMPLES * true_cond).pvalue < 1e-6


def test_per_example_clamps():
    W, V, b_v, b_h = make_model(5, 4, rows=3, seed=14)
    mask = torch.tensor([[True, False, False, False, True], [False] * 5, [True] * 5])
    values = torch.tensor([[1.0, 0, 0, 0, 1], [1.0] * 5, [0.0, 1, 0, 1, 0]], dtype=F64)
    v, _ = nade_sample(
        W, V, b_v, b_h, generator=torch.Generator().manual_seed(3), clamp=(mask, values)
    )
    assert (v[mask] == values[mask]).all()


def test_per_example_sampling_equals_looping_over_examples():
    W, V, b_v, b_h = make_model(6, 5, rows=5, seed=15)
    v, probs = nade_sample(W, V, b_v, b_h, generator=torch.Generator().manual_seed(4))
    assert v.shape == (5, 6)
    g = torch.Generator().manual_seed(4)
    looped = [nade_sample(W, V, b_v[k], b_h[k], generator=g) for k in range(5)]
    torch.testing.assert_close(v, torch.cat([s for s, _ in looped]), rtol=0, atol=0)
    torch.testing.assert_close(probs, torch.cat([p for _, p in looped]), rtol=0, atol=1e-14)


def test_sampling_is_seeded_and_deterministic():
    W, V, b_v, b_h = make_model(10, 6, seed=16, dtype=torch.float32)

    def draw(seed):
        return nade_sample(W, V, b_v, b_h, n=200, generator=torch.Generator().manual_seed(seed))

    a, pa = draw(5)
    b, pb = draw(5)
    c, _ = draw(6)
    assert torch.equal(a, b) and torch.equal(pa, pb)
    assert not torch.equal(a, c)


def test_shared_biases_default_to_one_sample():
    W, V, b_v, b_h = make_model(5, 4)
    v, probs = nade_sample(W, V, b_v, b_h)
    assert v.shape == probs.shape == (1, 5)


# ---------------------------------------------------------------------------------------------
# Mean-field expectation (an approximation)
# ---------------------------------------------------------------------------------------------
def naive_mean_field(W, V, b_v, b_h):
    n_v, n_h = W.shape
    p = []
    for i in range(n_v):
        h = [
            1 / (1 + math.exp(-(float(b_h[j]) + sum(p[k] * float(W[k, j]) for k in range(i)))))
            for j in range(n_h)
        ]
        a = float(b_v[i]) + sum(float(V[i, j]) * h[j] for j in range(n_h))
        p.append(1 / (1 + math.exp(-a)))
    return torch.tensor([p], dtype=F64)


def test_expected_visible_is_the_mean_field_recursion_and_exact_where_it_should_be(oracle):
    W, V, b_v, b_h = make_model(6, 4, scale=1.5, seed=17)
    mf = nade_expected_visible(W, V, b_v, b_h)
    torch.testing.assert_close(mf, naive_mean_field(W, V, b_v, b_h), rtol=1e-12, atol=1e-12)
    states = oracle.states(6)
    exact = (exact_probs(oracle, W, V, b_v, b_h)[:, None] * states).sum(0)
    assert abs(float(mf[0, 0] - exact[0])) < 1e-12  # the first unit is always exact
    # With W = 0 the units are independent and the recursion is the exact marginal.
    W0 = torch.zeros_like(W)
    exact0 = (exact_probs(oracle, W0, V, b_v, b_h)[:, None] * states).sum(0)
    torch.testing.assert_close(nade_expected_visible(W0, V, b_v, b_h)[0], exact0)


def test_expected_visible_per_example_equals_looping():
    W, V, b_v, b_h = make_model(6, 4, rows=3, seed=18)
    batched = nade_expected_visible(W, V, b_v, b_h)
    looped = torch.cat([nade_expected_visible(W, V, b_v[k], b_h[k]) for k in range(3)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-14)
    assert nade_expected_visible(W, V, b_v[0], b_h[0], n=4).shape == (4, 6)


# ---------------------------------------------------------------------------------------------
# dtype / device
# ---------------------------------------------------------------------------------------------
def check_dtype_device(dtype, device):
    W, V, b_v, b_h = (t.to(device) for t in make_model(5, 4, rows=3, dtype=dtype))
    v = random_v(3, 5, dtype=dtype).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    outs = [
        nade_log_prob(v, W, V, b_v, b_h),
        nade_conditionals(v, W, V, b_v, b_h),
        nade_hidden_states(v, W, b_h),
        *nade_sample(W, V, b_v, b_h, generator=g),
        nade_expected_visible(W, V, b_v, b_h),
    ]
    for out in outs:
        assert out.dtype == dtype and out.device.type == torch.device(device).type


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_preserved(dtype):
    check_dtype_device(dtype, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_is_preserved():
    check_dtype_device(torch.float32, "cuda")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_mismatched_shapes_raise_clear_errors():
    W, V, b_v, b_h = make_model(5, 4, rows=3)
    v = random_v(3, 5)
    with pytest.raises(InputError, match=r"NADE V: expected the shape of W \(5, 4\).*got shape"):
        nade_log_prob(v, W, V[:, :3], b_v, b_h)
    with pytest.raises(InputError, match=r"NADE bias b_v: expected shape \(5,\) or \(N, 5\)"):
        nade_log_prob(v, W, V, b_v[:, :4], b_h)
    with pytest.raises(InputError, match=r"NADE bias b_h: expected shape \(4,\) or \(N, 4\)"):
        nade_sample(W, V, b_v, b_h[:, :2])
    with pytest.raises(InputError, match=r"NADE biases: expected the same number of rows"):
        nade_sample(W, V, b_v, b_h[:2])
    with pytest.raises(InputError, match=r"NADE v: expected shape \(N, 5\), got shape \(3, 4\)"):
        nade_log_prob(v[:, :4], W, V, b_v, b_h)
    with pytest.raises(InputError, match=r"NADE biases: expected one row per example of v"):
        nade_conditionals(v[:2], W, V, b_v, b_h)
    with pytest.raises(InputError, match=r"NADE W: expected a 2-D tensor"):
        nade_hidden_states(v, W[0], b_h[0])
    with pytest.raises(InputError, match=r"NADE bias b_h: expected shape \(4,\)"):
        nade_hidden_states(v, W, b_h[:, :3])
    with pytest.raises(InputError, match=r"NADE chunk_size: expected an integer ≥ 1"):
        nade_log_prob(v, W, V, b_v, b_h, chunk_size=0)


def test_sampling_arguments_raise_clear_errors():
    W, V, b_v, b_h = make_model(5, 4, rows=3)
    with pytest.raises(InputError, match=r"NADE n: expected None or 3.*Fix: omit n"):
        nade_sample(W, V, b_v, b_h, n=4)
    with pytest.raises(InputError, match=r"NADE n: expected an integer ≥ 1"):
        nade_sample(W, V, b_v[0], b_h[0], n=0)
    mask = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(InputError, match=r"NADE clamp values: expected a tensor of shape \(N, 5\)"):
        nade_sample(W, V, b_v, b_h, clamp=(mask, torch.ones(3, 4)))
    with pytest.raises(InputError, match=r"NADE clamp mask: expected 3 rows"):
        nade_sample(W, V, b_v, b_h, clamp=(mask[:2], torch.ones(3, 5)))
    with pytest.raises(InputError, match=r"NADE clamp mask: expected a bool tensor"):
        nade_sample(W, V, b_v, b_h, clamp=(mask.double(), torch.ones(3, 5)))
