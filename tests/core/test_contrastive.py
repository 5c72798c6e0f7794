"""CD/PCD surrogates: their autograd gradients are the RBM learning rule (exact oracles)."""

from __future__ import annotations

import pytest
import torch

from rnnrbm.core.contrastive import PersistentChains, contrastive_loss
from rnnrbm.core.rbm import free_energy, hidden_mean


def _tiny(seed: int, n_v: int = 5, n_h: int = 4, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(n_v, n_h, generator=g, dtype=torch.float64) * scale).requires_grad_()
    b_v = torch.randn(n_v, generator=g, dtype=torch.float64).requires_grad_()
    b_h = torch.randn(n_h, generator=g, dtype=torch.float64).requires_grad_()
    return W, b_v, b_h


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_loglik_gradient_equals_data_minus_model_expectation(oracle, seed: int) -> None:  # type: ignore[no-untyped-def]
    """∇ mean log p(v) = ⟨v hᵀ⟩_data − ⟨v hᵀ⟩_model, both expectations by enumeration."""
    W, b_v, b_h = _tiny(seed)
    V = oracle.states(5)
    H = oracle.states(4)
    data = V[torch.tensor([1, 6, 7, 19, 30, 30])]
    log_z = torch.logsumexp(-free_energy(V, W, b_v, b_h), 0)
    mean_ll = (-free_energy(data, W, b_v, b_h) - log_z).mean()
    gW, gbv, gbh = torch.autograd.grad(mean_ll, (W, b_v, b_h))

    with torch.no_grad():
        # model expectation over the joint: p(v, h) ∝ exp(v·b_v + h·b_h + vᵀWh)
        neg_e = (V @ b_v)[:, None] + (H @ b_h)[None, :] + V @ W @ H.T
        p = torch.softmax(neg_e.flatten(), 0).reshape(len(V), len(H))
        model_vh = torch.einsum("ab,ai,bj->ij", p, V, H)
        model_v, model_h = p.sum(1) @ V, p.sum(0) @ H
        h_data = hidden_mean(data, W, b_h)
        data_vh = data.T @ h_data / len(data)
    torch.testing.assert_close(gW, data_vh - model_vh)
    torch.testing.assert_close(gbv, data.mean(0) - model_v)
    torch.testing.assert_close(gbh, h_data.mean(0) - model_h)


@pytest.mark.parametrize("direct", [False, True])
def test_surrogate_gradient_is_the_cd_rule(direct: bool) -> None:
    """∂L/∂W = −(v_posᵀ σ(v_pos W + c)/N − v_negᵀ σ(v_neg W + c)/M), any N ≠ M; by autograd and
    written out (``direct``)."""
    W, b_v, b_h = _tiny(3, 6, 3)
    g = torch.Generator().manual_seed(0)
    v_pos = (torch.rand(7, 6, generator=g) < 0.5).double()
    v_neg = (torch.rand(4, 6, generator=g) < 0.5).double()
    loss, f_pos, f_neg = contrastive_loss(v_pos, v_neg, W, b_v, b_h, direct=direct)
    torch.testing.assert_close(loss, f_pos.mean() - f_neg.mean())
    gW, gbv, gbh = torch.autograd.grad(loss, (W, b_v, b_h))
    with torch.no_grad():
        h_pos, h_neg = hidden_mean(v_pos, W, b_h), hidden_mean(v_neg, W, b_h)
    torch.testing.assert_close(gW, -(v_pos.T @ h_pos / 7 - v_neg.T @ h_neg / 4))
    torch.testing.assert_close(gbv, -(v_pos.mean(0) - v_neg.mean(0)))
    torch.testing.assert_close(gbh, -(h_pos.mean(0) - h_neg.mean(0)))


@pytest.mark.parametrize("direct", [False, True])
def test_per_example_biases_stack_and_flow_into_offsets(direct: bool) -> None:
    W, b_v, b_h = _tiny(4, 5, 3)
    offsets_v = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(1)
    v_pos = (torch.rand(6, 5, generator=g) < 0.5).double()
    v_neg = (torch.rand(6, 5, generator=g) < 0.5).double()
    loss, _, _ = contrastive_loss(v_pos, v_neg, W, b_v + offsets_v, b_h, direct=direct)
    looped = (
        sum(
            free_energy(v_pos[i : i + 1], W, b_v + offsets_v[i], b_h)
            - free_energy(v_neg[i : i + 1], W, b_v + offsets_v[i], b_h)
            for i in range(6)
        )
        / 6
    )
    torch.testing.assert_close(loss, looped.squeeze())
    (grad,) = torch.autograd.grad(loss, offsets_v)
    torch.testing.assert_close(grad, -(v_pos - v_neg) / 6)  # ∂F/∂b_v = −v
    with pytest.raises(ValueError, match="one negative row per positive row"):
        contrastive_loss(v_pos, v_neg[:3], W, b_v + offsets_v, b_h, direct=direct)


@pytest.mark.parametrize(
    "per_example", [(False, False), (True, False), (False, True), (True, True)]
)
def test_the_written_out_gradient_is_autograds(per_example: tuple[bool, bool]) -> None:
    """``direct``: the loss and free energies bit for bit, the gradient by finite differences and
    against autograd's, for shared and per-example biases."""
    W, b_v, b_h = _tiny(5, 6, 4)
    g = torch.Generator().manual_seed(2)
    v_pos = (torch.rand(5, 6, generator=g) < 0.5).double()
    v_neg = (torch.rand(5, 6, generator=g) < 0.5).double()
    if per_example[0]:
        b_v = (b_v + torch.randn(5, 6, generator=g, dtype=torch.float64)).detach().requires_grad_()
    if per_example[1]:
        b_h = (b_h + torch.randn(5, 4, generator=g, dtype=torch.float64)).detach().requires_grad_()
    ref = contrastive_loss(v_pos, v_neg, W, b_v, b_h)
    mine = contrastive_loss(v_pos, v_neg, W, b_v, b_h, direct=True)
    for a, b in zip(ref, mine, strict=True):
        assert torch.equal(a, b)
    params = (W, b_v, b_h)
    by_autograd, written = torch.autograd.grad(ref[0], params), torch.autograd.grad(mine[0], params)
    for a, b in zip(by_autograd, written, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda *p: contrastive_loss(v_pos, v_neg, *p, direct=True)[0], params
    )


@pytest.mark.parametrize("case", ["gaussian", "positive rows with a gradient", "3-d rows"])
def test_direct_falls_back_to_autograd_where_it_is_not_written(case: str) -> None:
    """Gaussian visibles, positive rows that carry a gradient (the DBM's mean-field rows), rows
    that are not a matrix: autograd's graph, bit for bit."""
    W, b_v, b_h = _tiny(6, 5, 3)
    g = torch.Generator().manual_seed(3)
    shape = (2, 4, 5) if case == "3-d rows" else (4, 5)
    v_pos = torch.rand(shape, generator=g, dtype=torch.float64)
    v_neg = torch.rand(shape, generator=g, dtype=torch.float64)
    log_sigma = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    extra = (log_sigma,) if case == "gaussian" else ()
    if case == "positive rows with a gradient":
        v_pos.requires_grad_()
    params = (W, b_v, b_h, *extra) + ((v_pos,) if v_pos.requires_grad else ())
    ref = contrastive_loss(v_pos, v_neg, W, b_v, b_h, *extra)[0]
    mine = contrastive_loss(v_pos, v_neg, W, b_v, b_h, *extra, direct=True)[0]
    assert torch.equal(ref, mine) and mine.grad_fn is not None
    assert type(mine.grad_fn).__name__ != "_DirectSurrogateBackward"
    for a, b in zip(
        torch.autograd.grad(ref, params), torch.autograd.grad(mine, params), strict=True
    ):
        assert torch.equal(a, b)


def test_the_written_out_gradient_refuses_a_second_derivative() -> None:
    W, b_v, b_h = _tiny(7, 5, 3)
    g = torch.Generator().manual_seed(4)
    v_pos, v_neg = ((torch.rand(4, 5, generator=g) < 0.5).double() for _ in range(2))
    loss = contrastive_loss(v_pos, v_neg, W, b_v, b_h, direct=True)[0]
    (gW,) = torch.autograd.grad(loss, W, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gW.sum(), W)


def test_persistent_chains_are_independent_of_batch_and_seeded() -> None:
    W, b_v, b_h = (t.detach().float() for t in _tiny(5, 5, 3))
    data = (torch.rand(8, 5, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    runs = []
    for _ in range(2):
        chains = PersistentChains(31, 5)
        gen = torch.Generator().manual_seed(3)
        first = chains.advance(W, b_v, b_h, 2, gen, data=data).clone()
        second = chains.advance(W, b_v, b_h, 2, gen, data=data).clone()
        runs.append((first, second))
        assert first.shape == (31, 5) and not torch.equal(first, second)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_chains_advance_without_autograd_in_grad_mode() -> None:
    """Called with trainable parameters outside no_grad, the chains record no graph."""
    W, b_v, b_h = _tiny(4)
    chains = PersistentChains(6, 5, dtype=torch.float64)
    state = chains.advance(W, b_v, b_h, 1, torch.Generator().manual_seed(0))
    assert torch.is_grad_enabled() and W.requires_grad
    assert not state.requires_grad and state.grad_fn is None and state is chains.state
