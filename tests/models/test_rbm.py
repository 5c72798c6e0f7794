"""RBM / GaussianBernoulliRBM: the seed example, learning on bars-and-stripes, errors."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from rnnrbm import RBM, GaussianBernoulliRBM
from rnnrbm.validation import InputError, InputTypeError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread. Two, on a busy 2-core machine, made a 100 × 9 addmm
    take ~4 ms (the bars-and-stripes test ran 160 s instead of a few)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_movie_example_separates_the_two_groups(seed: int) -> None:
    example = runpy.run_path(str(EXAMPLES / "movies.py"))
    rbm = example["train_movie_rbm"](seed)
    p = rbm.transform(example["USERS"])
    sf_unit = int(p[:3].mean(0).argmax())
    oscar_unit = 1 - sf_unit
    # Each group switches on its own unit more than the other group does.
    assert p[:3, sf_unit].min() > p[3:, sf_unit].max()
    assert p[3:, oscar_unit].min() > p[:3, oscar_unit].max()
    new_user = rbm.transform(torch.tensor([[0, 0, 0, 1, 1, 0]]))[0]
    assert new_user[oscar_unit] > 0.5 > new_user[sf_unit]


def test_pcd_learns_bars_and_stripes_exact_loglik(oracle) -> None:
    """PCD-k on 3×3 bars-and-stripes reaches mean exact train log-likelihood ≥ −3.2 nats.

    The 14 patterns are the whole training set, so the best possible model (uniform on them) has
    −ln 14 = −2.64 nats; an untrained RBM is ≈ −6.24 (uniform on 512 states). The threshold
    −3.2 was chosen from measured runs of this configuration (plain SGD lr 0.1, PCD-5, 16
    hidden, 300 epochs: seeds 0–4 reached −2.83 to −2.97 with 85–91 % of the mass on the 14
    patterns), leaving a margin for platform differences; a model that learned nothing fails
    by > 3 nats, and lr 0.05 (undertrained, −3.27 to −3.55) fails too.
    """
    data = oracle.bars_and_stripes(3)
    assert data.shape == (14, 9)
    train = data.repeat(20, 1)
    rbm = RBM(9, 16, k=5, method="pcd", n_chains=100, init_std=0.1, seed=0)
    rbm.fit(train, epochs=300, batch_size=28, lr=0.1, optimizer="sgd", seed=0)
    ll = rbm.log_likelihood(data, method="exact")
    assert ll.estimator == "exact"
    assert float(ll.value.mean()) >= -3.2
    p_data = torch.exp(ll.value).sum()
    assert float(p_data) > 0.75  # most of the probability mass sits on the 14 patterns


def test_log_likelihood_exact_matches_brute_force(oracle) -> None:  # type: ignore[no-untyped-def]
    rbm = RBM(5, 4, init_std=1.0, seed=3)
    states = oracle.states(5, torch.float32)
    ll = rbm.log_likelihood(states).value
    assert float(torch.logsumexp(ll, 0)) == pytest.approx(0.0, abs=1e-6)
    f = rbm.frame
    log_z = oracle.joint_log_z(f.W.detach(), f.b_v.detach(), f.b_h.detach())
    expected = -f.free_energy(states).double() - log_z
    torch.testing.assert_close(ll, expected.detach())


def test_log_likelihood_ais_close_to_exact() -> None:
    rbm = RBM(10, 8, init_std=0.5, seed=1)
    x = rbm.sample(50, steps=200, generator=torch.Generator().manual_seed(0))
    exact = rbm.log_likelihood(x, "exact")
    ais = rbm.log_likelihood(
        x, "ais", n_runs=200, n_betas=2000, generator=torch.Generator().manual_seed(0)
    )
    assert ais.estimator.startswith("ais")
    se = float(ais.se[0])
    assert abs(float((ais.value - exact.value).mean())) <= 3 * se + 1e-3


def test_sample_and_transform_shapes_and_determinism() -> None:
    rbm = RBM(12, 5, seed=0)
    a = rbm.sample(7, steps=3, generator=torch.Generator().manual_seed(1))
    b = rbm.sample(7, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (7, 12) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    h = rbm.transform(a)
    assert h.shape == (7, 5) and bool(((h > 0) & (h < 1)).all())
    assert rbm.transform(a[0]).shape == (1, 5)  # one example promoted to a batch


def test_gaussian_rbm_learns_data_scale() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 4, generator=g) * torch.tensor([0.5, 1.0, 2.0, 3.0]) + 5.0
    rbm = GaussianBernoulliRBM(4, 3, seed=0)
    rbm.fit(x, epochs=3, batch_size=50, lr=1e-3)
    sigma = rbm.frame.log_sigma.exp()
    torch.testing.assert_close(sigma, torch.tensor([0.5, 1.0, 2.0, 3.0]), rtol=0.2, atol=0)
    ll = rbm.log_likelihood(x, "exact").value
    assert bool(torch.isfinite(ll).all())


@pytest.mark.parametrize(
    ("bad", "error", "pattern"),
    [
        (torch.full((4, 6), 0.5), InputError, r"X: expected binary values.*0\.5.*threshold"),
        (torch.tensor([[0.0, 1, 0, 1, float("nan"), 0]]), InputError, r"X: expected finite"),
        (torch.zeros(3, 5), InputError, r"X: expected 6 features.*got 5"),
        (torch.zeros(0, 6), InputError, r"X: expected at least one example"),
        ("not data", InputTypeError, r"X: expected a torch.Tensor"),
        ([["a", "b"]], InputTypeError, r"X: expected numbers"),
        (torch.zeros(2, 3, 6), InputError, r"X: expected 2 dimensions"),
    ],
)
def test_bad_input_messages(bad: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        RBM(6, 3).fit(bad, epochs=1)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(InputError, match=r"method: expected 'cd' or 'pcd'"):
        RBM(6, 3, method="ml")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"n_hidden: expected an integer ≥ 1"):
        RBM(6, 0)
    with pytest.raises(InputError, match=r"n_visible.*above|too many|25"):
        RBM(30, 30).log_likelihood(torch.zeros(1, 30), method="exact")
