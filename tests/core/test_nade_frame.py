"""NADEFrame: the NADE frame estimator with per-example bias offsets (RNN-NADE's frame model)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2

from rnnrbm.core.estimators import NADEFrame
from rnnrbm.core.nade import nade_log_prob, nade_logits

F64 = torch.float64


def _frame(n_v: int = 4, n_h: int = 3, seed: int = 0) -> NADEFrame:
    g = torch.Generator().manual_seed(seed)
    est = NADEFrame(n_v, n_h, init_std=1.0, generator=g, dtype=F64)
    with torch.no_grad():  # non-zero biases so every term matters
        est.b_v.copy_(torch.randn(n_v, generator=g, dtype=F64))
        est.b_h.copy_(torch.randn(n_h, generator=g, dtype=F64))
    return est


def _offsets(N: int, est: NADEFrame, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(N, est.n_visible, generator=g, dtype=F64),
        torch.randn(N, est.n_hidden, generator=g, dtype=F64),
    )


def _index(v: torch.Tensor) -> torch.Tensor:
    """Row of each binary vector in the lexicographic order of ``oracle.states``."""
    n = v.shape[1]
    weights = 2 ** torch.arange(n - 1, -1, -1)
    return (v.long() * weights).sum(1)


def test_log_prob_normalised_for_every_offset_row(oracle) -> None:
    est = _frame()
    states = oracle.states(4)  # (16, 4)
    d_v, d_h = _offsets(5, est)
    # Every state under every offset row: (5·16) rows in one call.
    v = states.repeat(5, 1)
    offs = (d_v.repeat_interleave(16, 0), d_h.repeat_interleave(16, 0))
    lp = est.log_prob(v, offs)
    assert lp.estimator == "exact" and lp.value.dtype == F64
    assert torch.equal(lp.se, torch.zeros_like(lp.value))
    total = torch.logsumexp(lp.value.reshape(5, 16), 1)
    torch.testing.assert_close(total, torch.zeros(5, dtype=F64), atol=1e-12, rtol=0)
    # The offsets matter: the 5 distributions differ.
    probs = lp.value.reshape(5, 16).exp()
    assert (probs[0] - probs[1]).abs().max() > 1e-2


def test_offsets_are_added_to_biases_and_loss_is_exact_nll() -> None:
    est = _frame()
    d_v, d_h = _offsets(6, est)
    v = (torch.rand(6, 4, generator=torch.Generator().manual_seed(2)) < 0.5).to(F64)
    ref = nade_log_prob(v, est.W, est.V, est.b_v + d_v, est.b_h + d_h)
    torch.testing.assert_close(est.log_prob(v, (d_v, d_h)).value, ref)
    torch.testing.assert_close(est.loss(v, (d_v, d_h)), -ref.mean())
    # offsets=None is the zero-offset case
    zero = (torch.zeros_like(d_v), torch.zeros_like(d_h))
    torch.testing.assert_close(est.log_prob(v).value, est.log_prob(v, zero).value)
    # NADE is normalised: "ais" gives the same exact value
    assert torch.equal(est.log_prob(v, (d_v, d_h), "ais").value, ref.detach())
    with pytest.raises(ValueError, match="method: expected 'exact' or 'ais'"):
        est.log_prob(v, None, "bogus")  # type: ignore[arg-type]


def test_loss_gradient_reaches_parameters_and_offsets() -> None:
    est = _frame()
    d_v, d_h = (o.requires_grad_() for o in _offsets(3, est))
    v = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=F64)
    est.loss(v, (d_v, d_h)).backward()
    for name, p in est.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert d_v.grad is not None and d_v.grad.abs().sum() > 0
    assert d_h.grad is not None and d_h.grad.abs().sum() > 0
    # d(−mean log p)/dΔb_v = (σ(a) − v)/N with a the teacher-forced logits (a_i is linear in b_v,i)
    with torch.no_grad():
        a = nade_logits(v, est.W, est.V, est.b_v + d_v, est.b_h + d_h)
    torch.testing.assert_close(d_v.grad, (torch.sigmoid(a) - v) / 3)


def test_hidden_mean_is_the_full_frame_hidden_vector() -> None:
    est = _frame()
    d_v, d_h = _offsets(4, est)
    v = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=F64)
    expected = torch.sigmoid(est.b_h + d_h + v @ est.W)
    torch.testing.assert_close(est.hidden_mean(v, (d_v, d_h)), expected)
    assert est.offset_sizes == (4, 3)


def test_samples_follow_the_exact_distribution(oracle) -> None:
    est = _frame(3, 2)
    n = 20_000
    d_v, d_h = _offsets(1, est, seed=3)
    offs = (d_v.expand(n, 3), d_h.expand(n, 2))
    s = est.sample(offs, 0, torch.Generator().manual_seed(7))
    assert s.shape == (n, 3) and set(s.unique().tolist()) <= {0.0, 1.0}
    counts = torch.bincount(_index(s), minlength=8).double()
    p = est.log_prob(oracle.states(3), (d_v.expand(8, 3), d_h.expand(8, 2))).value.exp()
    stat = float(((counts - n * p) ** 2 / (n * p)).sum())
    assert stat < chi2.ppf(0.999, 7), stat
    # A wrong distribution (offsets dropped) is rejected by the same test.
    q = est.log_prob(oracle.states(3)).value.exp()
    assert float(((counts - n * q) ** 2 / (n * q)).sum()) > chi2.ppf(0.999, 7)


def test_sample_is_seeded_and_ignores_steps() -> None:
    est = _frame()
    offs = _offsets(50, est)
    a = est.sample(offs, 0, torch.Generator().manual_seed(1))
    b = est.sample(offs, 25, torch.Generator().manual_seed(1))
    c = est.sample(offs, 0, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    shared = est.sample(None, 0, torch.Generator().manual_seed(1), n=7)
    assert shared.shape == (7, 4)


def test_clamp_holds_units() -> None:
    est = _frame()
    offs = _offsets(40, est)
    mask = torch.tensor([True, False, False, True])
    values = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    s = est.sample(offs, 0, torch.Generator().manual_seed(0), (mask, values))
    assert torch.all(s[:, 0] == 1) and torch.all(s[:, 3] == 0)
    m = est.expected_visible(offs, clamp=(mask.expand(40, 4), values.expand(40, 4)))
    assert torch.all(m[:, 0] == 1) and torch.all(m[:, 3] == 0)
    assert torch.all((m[:, 1:3] > 0) & (m[:, 1:3] < 1))


def test_expected_visible_exact_for_first_unit_and_for_zero_weights(oracle) -> None:
    est = _frame(3, 2)
    d_v, d_h = _offsets(2, est)
    states = oracle.states(3)
    m = est.expected_visible((d_v, d_h))
    for row in range(2):
        p = est.log_prob(states, (d_v[row].expand(8, 3), d_h[row].expand(8, 2))).value.exp()
        exact = (p[:, None] * states).sum(0)
        torch.testing.assert_close(m[row, 0], exact[0])  # p_0 is always exact
    with torch.no_grad():
        est.W.zero_()  # units independent: the greedy mean is the exact marginal
    m = est.expected_visible((d_v, d_h))
    p = est.log_prob(states, (d_v[0].expand(8, 3), d_h[0].expand(8, 2))).value.exp()
    torch.testing.assert_close(m[0], (p[:, None] * states).sum(0))
