"""The written-out gradients (RNN backward pass, CD surrogate): autograd's values and gradient."""

from __future__ import annotations

import pytest
import torch

from rnnrbm.models.recurrence import RNNRecurrence
from rnnrbm.models.sequence import build_sequence_model
from rnnrbm.models.tanh_rnn import tanh_rnn
from rnnrbm.validation import InputError

F64 = torch.float64


def _inputs(B: int, T: int, n: int = 5, H: int = 4, dtype=F64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, T, n, generator=g) < 0.4).to(dtype)
    params = [
        torch.randn(shape, generator=g, dtype=dtype).mul_(0.7).requires_grad_()
        for shape in ((B, H), (H, n), (H, H), (H,), (H,))
    ]
    return x, params


@pytest.mark.parametrize(("B", "T"), [(1, 1), (1, 6), (3, 5)])
def test_gradcheck(B: int, T: int) -> None:
    """Finite differences agree with the written-out BPTT for h0, both weights and both biases."""
    x, params = _inputs(B, T)
    assert torch.autograd.gradcheck(lambda *p: tanh_rnn(x, *p), params)


def test_values_are_torch_rnn_tanh_bit_for_bit_and_gradients_agree() -> None:
    x, (h0, w_ih, w_hh, b_ih, b_hh) = _inputs(4, 9, n=7, H=6, dtype=torch.float32, seed=1)
    weights = [w_ih, w_hh, b_ih, b_hh]
    ref = torch.rnn_tanh(x, h0.unsqueeze(0), weights, True, 1, 0.0, True, False, True)[0]
    mine = tanh_rnn(x, h0, *weights)
    assert torch.equal(ref, mine)
    upstream = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    params = [h0, *weights]
    for a, b in zip(
        torch.autograd.grad(ref, params, upstream),
        torch.autograd.grad(mine, params, upstream),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "activation"),
    [
        ("rnn-rbm", "sigmoid"),
        ("rnn-rbm", "tanh"),
        ("rnn-nade", "sigmoid"),
        ("rnn-nade", "tanh"),
        ("rtrbm", None),
        ("lstm-rtrbm", None),
    ],
)
def test_the_written_out_gradient_of_each_model_is_autograds(name: str, activation) -> None:  # type: ignore[no-untyped-def]
    """Each temporal model with gradient='direct' (the CD surrogate's and the RNN's backward pass
    written out) gives the default's loss bit for bit and its gradient to rounding, on padded
    batches."""
    g = torch.Generator().manual_seed(3)
    rolls = (torch.rand(3, 7, 6, generator=g) < 0.3).to(F64)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 2])[:, None]
    grads, losses = [], []
    for gradient in ("autograd", "direct"):
        options: dict = {"gradient": gradient, "dtype": "float64", "seed": 4}
        if activation is not None:
            options["activation"] = activation
        model = build_sequence_model(
            name,
            n_visible=6,
            n_hidden=5,
            n_recurrent=None if name == "rtrbm" else 4,
            k=None if name == "rnn-nade" else 2,
            **options,
        )
        with torch.no_grad():  # weights large enough that the recurrence matters
            init = torch.Generator().manual_seed(5)
            for p in model.parameters():
                p.normal_(0.0, 0.5, generator=init)
        loss, _ = model.loss((rolls, mask), generator=torch.Generator().manual_seed(6))
        written = {"_TanhRNNBackward", "_DirectSurrogateBackward"} & _graph_nodes(loss)
        expected = {"_TanhRNNBackward"} if name in ("rnn-rbm", "rnn-nade") else set()
        if name != "rnn-nade":
            expected.add("_DirectSurrogateBackward")
        assert written == (expected if gradient == "direct" else set())  # the path really runs
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    assert torch.equal(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _graph_nodes(t: torch.Tensor) -> set[str]:
    """The class names of every node in ``t``'s backward graph."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return {type(n).__name__ for n in seen}


def test_frames_that_need_a_gradient_get_autograds_pass() -> None:
    rec = RNNRecurrence(5, 4, (5, 3), gradient="direct", dtype=F64)
    v = torch.rand(2, 6, 5, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(rec.states(v).sum(), v)
    assert grad.abs().sum() > 0


def test_the_setting_is_saved_and_checked() -> None:
    model = build_sequence_model("rnn-rbm", gradient="direct")
    assert model.config()["gradient"] == "direct"
    assert type(model).from_config(model.config()).recurrence.gradient == "direct"
    config = model.config()
    del config["gradient"]  # a checkpoint written before the setting existed
    assert type(model).from_config(config).recurrence.gradient == "autograd"
    with pytest.raises(InputError, match="gradient"):
        RNNRecurrence(4, 3, (4, 2), gradient="manual")  # type: ignore[arg-type]
