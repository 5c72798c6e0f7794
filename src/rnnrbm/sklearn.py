"""A drop-in for scikit-learn's ``BernoulliRBM`` running on rnnrbm (optional extra).

``rnnrbm.sklearn.BernoulliRBM`` takes scikit-learn's parameters (``n_components``,
``learning_rate``, ``batch_size``, ``n_iter``, ``verbose``, ``random_state``) with the same
meaning and defaults, and adds ``k`` (Gibbs steps per update), ``n_chains`` (persistent chains;
default ``batch_size``, as scikit-learn), ``method`` (``"pcd"`` as scikit-learn, or ``"cd"``) and
``device`` (``"cpu"``, ``"cuda"``, ``"auto"``). It implements ``fit``, ``partial_fit``,
``transform``, ``score_samples`` and ``gibbs`` and exposes ``components_``, ``intercept_hidden_``
and ``intercept_visible_``, so it works in a ``Pipeline`` and under ``GridSearchCV``.

Training is the library's: the model is an ``rnnrbm.models.RBM`` trained by ``training.fit``
(plain SGD on the mean CD/PCD gradient, which is scikit-learn's update rule). Differences,
all deliberate:

- the visible biases start at the log-odds of the data marginals (Hinton 2010 §8), not at zero
  (for data in [0, 1]);
- mini-batches are reshuffled every epoch (scikit-learn walks fixed slices);
- parameters are float32 (``transform`` and ``score_samples`` return the input's float dtype);
- the persistent chains hold visible states (``rbm_.chains``), not ``h_samples_``;
- sparse input is accepted and densified.

The model is meant for data in [0, 1] (binary, or grey levels as in scikit-learn's digits
example); like scikit-learn, other real values are accepted (visible biases then start at zero).
``score_samples`` is scikit-learn's stochastic pseudo-likelihood: one unit per row, drawn from
``random_state``, flipped (``v_i → 1 − v_i``); ``n_features · log σ(F(ṽ) − F(v))``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

try:
    import scipy.sparse as sp
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "rnnrbm.sklearn: expected scikit-learn (≥ 1.6) to be installed, got ImportError "
        f"({exc}). Fix: pip install 'rnnrbm[sklearn]'"
    ) from exc

from rnnrbm.core.rbm import free_energy, gibbs_chain, hidden_mean
from rnnrbm.models.rbm import RBM
from rnnrbm.training import Callback, RowBatches, TrainConfig
from rnnrbm.training import fit as train_loop
from rnnrbm.validation import (
    InputError,
    check_choice,
    check_positive_int,
    error_message,
    resolve_device,
)

__all__ = ["BernoulliRBM"]

_SEED_RANGE = 2**31 - 1


class _SklearnRBM(RBM):
    """The library RBM; its visible bias is set from the data on the first training call only,
    so ``partial_fit`` keeps what earlier calls learned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = False

    def on_fit_start(self, train: Any, resumed: bool = False) -> None:
        data = getattr(train, "data", None)
        first = not (resumed or self.started)  # checked first: partial_fit skips the range scan
        in_range = first and data is not None and bool(((data >= 0) & (data <= 1)).all())
        # Outside [0, 1] the log-odds are undefined: keep scikit-learn's zero start.
        super().on_fit_start(train, resumed=not in_range)
        self.started = True


class _Verbose(Callback):
    """scikit-learn's progress line after every epoch (pseudo-likelihood of the training data)."""

    def __init__(self, estimator: BernoulliRBM, X: np.ndarray) -> None:
        self.estimator, self.X, self.begin = estimator, X, time.time()

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        end = time.time()
        pll = self.estimator.score_samples(self.X).mean()
        name = type(self.estimator).__name__
        print(
            f"[{name}] Iteration {state.epoch}, pseudo-likelihood = {pll:.2f}, "
            f"time = {end - self.begin:.2f}s"
        )
        self.begin = end


class BernoulliRBM(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Bernoulli RBM trained by PCD-k (or CD-k) on rnnrbm; a drop-in for scikit-learn's.

    Parameters
    ----------
    n_components : int, default=256. Number of hidden units.
    learning_rate : float, default=0.1. SGD step on the mean gradient of a mini-batch.
    batch_size : int, default=10. Examples per mini-batch.
    n_iter : int, default=10. Epochs over the training data.
    verbose : int, default=0. Print the pseudo-likelihood after every epoch.
    random_state : int, RandomState or None. Seeds the weights, the training samples and
        ``score_samples`` / ``gibbs`` (an int makes everything reproducible).
    k : int, default=1. Gibbs steps per update (PCD-k / CD-k).
    n_chains : int or None, default=None. Persistent chains; None means ``batch_size``.
    method : {"pcd", "cd"}, default="pcd".
    device : str, default="cpu". "cpu", "cuda", "cuda:N" or "auto".

    Attributes
    ----------
    rbm_ : rnnrbm.models.RBM, the trained model.
    components_ : ndarray (n_components, n_features), the weights (a copy; assignable).
    intercept_hidden_ : ndarray (n_components,); intercept_visible_ : ndarray (n_features,).
    n_features_in_ : int; feature_names_in_ : ndarray, when X has string column names.
    """

    def __init__(
        self,
        n_components: int = 256,
        *,
        learning_rate: float = 0.1,
        batch_size: int = 10,
        n_iter: int = 10,
        verbose: int = 0,
        random_state: Any = None,
        k: int = 1,
        n_chains: int | None = None,
        method: str = "pcd",
        device: str = "cpu",
    ) -> None:
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.k = k
        self.n_chains = n_chains
        self.method = method
        self.device = device

    # ----------------------------------------------------------------- helpers
    def _check_params(self) -> None:
        check_positive_int(self.n_components, "n_components")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.n_iter, "n_iter", minimum=0)
        check_positive_int(self.k, "k")
        if self.n_chains is not None:
            check_positive_int(self.n_chains, "n_chains")
        if isinstance(self.learning_rate, bool) or not (
            isinstance(self.learning_rate, int | float) and self.learning_rate > 0
        ):
            raise InputError(
                error_message("learning_rate", "a float > 0", repr(self.learning_rate), "pass 0.1")
            )
        check_choice(self.method, "method", ("cd", "pcd"))

    def _tensor(self, X: Any) -> torch.Tensor:
        """A float32 tensor copy of validated data on the model's device."""
        dense = X.toarray() if sp.issparse(X) else X
        arr = np.array(dense, dtype=np.float32)  # a copy: safe for read-only/memmapped input
        return torch.from_numpy(arr).to(resolve_device(self.device))

    def _generator(self, rng: np.random.RandomState) -> torch.Generator:
        device = resolve_device(self.device)
        return torch.Generator(device=device).manual_seed(int(rng.randint(_SEED_RANGE)))

    def _build(self, n_features: int, rng: np.random.RandomState) -> None:
        self.rbm_ = _SklearnRBM(
            n_features,
            self.n_components,
            k=self.k,
            method=self.method,  # type: ignore[arg-type]
            n_chains=self.n_chains or self.batch_size,
            init_std=0.01,
            seed=int(rng.randint(_SEED_RANGE)),
            device=resolve_device(self.device),
        )
        self._n_features_out = self.n_components

    def _train(
        self, x: torch.Tensor, epochs: int, batch_size: int, seed: int, callbacks: list
    ) -> None:
        """``epochs`` passes of THE training loop (plain SGD, ``learning_rate``) over ``x``."""
        config = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=float(self.learning_rate), seed=seed
        )
        batches = RowBatches(x, batch_size, seed=seed, shuffle=batch_size < len(x))
        train_loop(self.rbm_, batches, None, config, callbacks)

    def _params(self, dtype: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.rbm_.frame
        dt = torch.float64 if dtype == np.float64 else torch.float32
        return f.W.detach().to(dt), f.b_v.detach().to(dt), f.b_h.detach().to(dt)

    # ----------------------------------------------------------------- training
    def fit(self, X: Any, y: Any = None) -> BernoulliRBM:
        """Fit the model to the rows of ``X`` (``n_iter`` epochs). ``y`` is ignored."""
        X = validate_data(self, X, accept_sparse="csr", dtype=(np.float64, np.float32))
        self._check_params()
        rng = check_random_state(self.random_state)
        self._build(X.shape[1], rng)
        x = self._tensor(X)
        callbacks = [_Verbose(self, X)] if self.verbose else []
        self._train(x, self.n_iter, self.batch_size, int(rng.randint(_SEED_RANGE)), callbacks)
        return self

    def partial_fit(self, X: Any, y: Any = None) -> BernoulliRBM:
        """One SGD update with ``X`` as one mini-batch (scikit-learn's semantics); the persistent
        chains carry over between calls. ``y`` is ignored."""
        first_pass = not hasattr(self, "rbm_")
        X = validate_data(
            self, X, accept_sparse="csr", dtype=(np.float64, np.float32), reset=first_pass
        )
        if not hasattr(self, "random_state_"):
            self.random_state_ = check_random_state(self.random_state)
        if first_pass:
            self._check_params()
            self._build(X.shape[1], self.random_state_)
        x = self._tensor(X)
        self._train(x, 1, x.shape[0], int(self.random_state_.randint(_SEED_RANGE)), [])
        return self

    # ----------------------------------------------------------------- inference
    def transform(self, X: Any) -> np.ndarray:
        """Hidden probabilities ``P(h = 1 | v = X)``, ``(n_samples, n_components)``, in X's
        float dtype (float64 inputs are computed in float64)."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False, dtype=(np.float64, np.float32))
        W, _, b_h = self._params(X.dtype)
        v = self._input(X, W.dtype)
        with torch.no_grad():
            return hidden_mean(v, W, b_h).cpu().numpy()

    def _input(self, X: Any, dtype: torch.dtype) -> torch.Tensor:
        dense = X.toarray() if sp.issparse(X) else X
        arr = np.array(dense, dtype=np.float64 if dtype == torch.float64 else np.float32)
        return torch.from_numpy(arr).to(self.rbm_.device)

    def score_samples(self, X: Any) -> np.ndarray:
        """Stochastic pseudo-log-likelihood per row (scikit-learn's): one unit per row drawn from
        ``random_state`` is flipped, ``n_features · log σ(F(flipped) − F(v))``, float64."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        rng = check_random_state(self.random_state)
        W, b_v, b_h = self._params(np.float64)
        v = self._input(X, torch.float64)
        rows = torch.arange(v.shape[0])
        cols = torch.from_numpy(rng.randint(0, v.shape[1], v.shape[0]))
        flipped = v.clone()
        flipped[rows, cols] = 1.0 - flipped[rows, cols]
        with torch.no_grad():
            gain = free_energy(flipped, W, b_v, b_h) - free_energy(v, W, b_v, b_h)
            return (-v.shape[1] * F.softplus(-gain)).cpu().numpy()

    def gibbs(self, v: Any) -> np.ndarray:
        """One Gibbs step ``v → h → v'`` (core ``gibbs_chain``); returns the boolean sample
        ``v'`` like scikit-learn. Draws come from ``random_state_``."""
        check_is_fitted(self)
        X = validate_data(self, v, accept_sparse="csr", reset=False)
        if not hasattr(self, "random_state_"):
            self.random_state_ = check_random_state(self.random_state)
        W, b_v, b_h = self._params(np.float32)
        x = self._input(X, torch.float32)
        gen = self._generator(self.random_state_)
        state = gibbs_chain(x, W, b_v, b_h, 1, gen)
        return state.v.cpu().numpy().astype(bool)

    # ----------------------------------------------------------------- scikit-learn's attributes
    def _assign(self, param: torch.Tensor, value: Any, name: str, transpose: bool = False) -> None:
        arr = np.asarray(value, dtype=np.float64)
        shape = tuple(reversed(param.shape)) if transpose else tuple(param.shape)
        if arr.shape != shape:
            raise InputError(error_message(name, f"shape {shape}", f"{arr.shape}", "match it"))
        with torch.no_grad():
            param.copy_(torch.from_numpy(arr.T.copy() if transpose else arr).to(param.dtype))

    @property
    def components_(self) -> np.ndarray:
        return self.rbm_.frame.W.detach().T.cpu().double().numpy()

    @components_.setter
    def components_(self, value: Any) -> None:
        self._assign(self.rbm_.frame.W, value, "components_", transpose=True)

    @property
    def intercept_hidden_(self) -> np.ndarray:
        return self.rbm_.frame.b_h.detach().cpu().double().numpy()

    @intercept_hidden_.setter
    def intercept_hidden_(self, value: Any) -> None:
        self._assign(self.rbm_.frame.b_h, value, "intercept_hidden_")

    @property
    def intercept_visible_(self) -> np.ndarray:
        return self.rbm_.frame.b_v.detach().cpu().double().numpy()

    @intercept_visible_.setter
    def intercept_visible_(self, value: Any) -> None:
        self._assign(self.rbm_.frame.b_v, value, "intercept_visible_")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
