"""DBN: a deep belief net stacked from the conditional-RBM core (docs/design.md §1, §3).

Hinton, Osindero & Teh (2006): a stack of core RBMs (``models.rbm.RBM``) trained greedily, layer
``l`` on the up-pass probabilities of layer ``l − 1``, each through the shared ``training.fit``
loop. The generative model is the top RBM over ``(h^{L−1}, h^L)`` with directed sigmoid layers
below it (each lower RBM's visible conditional); generation is Gibbs sampling in the top RBM
followed by one down-pass. ``fine_tune`` adds a softmax output layer and trains the whole up-pass
by backpropagation (the deeplearning.net DBN tutorial's recipe). ``log_likelihood`` is the
variational lower bound of Salakhutdinov & Murray (2008, §5) with the factorial recognition
distribution ``q(h^l | h^{l−1})`` (the up-pass), estimated with samples of ``q`` and ``log Z`` of
the top RBM (exact or AIS).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnrbm.core.estimators import LogProb
from rnnrbm.core.rbm import (
    GibbsState,
    bernoulli,
    gibbs_chain,
    hidden_mean,
    hidden_preactivation,
    visible_mean,
    visible_preactivation,
)
from rnnrbm.models.rbm import RBM, Method, ais_options, check_method
from rnnrbm.models.stack import LayerStack, layer_sizes, train, train_greedily
from rnnrbm.registry import register_model
from rnnrbm.validation import InputError, as_data_tensor, check_positive_int, error_message

__all__ = ["DBN"]


class _Classifier(nn.Module):
    """The fine-tuning objective of a DBN as a model for ``training.fit``: rows are
    ``[x, label]`` (the label in the last column), loss = softmax cross-entropy of the up-pass."""

    def __init__(self, dbn: DBN) -> None:
        super().__init__()
        self.dbn = dbn

    def loss(
        self, batch: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch[:, :-1], batch[:, -1].long()
        logits = self.dbn(x)
        error = (logits.detach().argmax(1) != y).float().mean()
        return F.cross_entropy(logits, y), {"error_rate": error}

    def validate(self, valid: Tensor) -> dict[str, float]:
        x, y = valid[:, :-1], valid[:, -1].long()
        with torch.no_grad():
            logits = self.dbn(x)
        return {
            "valid_xent": float(F.cross_entropy(logits, y)),
            "valid_error": float((logits.argmax(1) != y).float().mean()),
        }


@register_model("dbn")
class DBN(LayerStack):
    """A deep belief net: core RBMs stacked and trained greedily (Hinton et al. 2006).

    Parameters
    ----------
    n_visible : visible units (binary, or grey levels in [0, 1] for training/features).
    hidden : hidden layer sizes, bottom to top; ``layers[l]`` is the RBM between layer ``l``
        and ``l + 1``.
    k, method, n_chains : CD-k / PCD-k of every layer RBM (CD-1 as in the DBN tutorial).
    init_std : standard deviation of the initial weights.
    n_classes : size of the softmax output layer (set by ``fine_tune`` when None).
    seed : seeds the initial weights (layer ``l`` uses ``seed + l``).
    """

    model_type = "dbn"

    def __init__(
        self,
        n_visible: int,
        hidden: Sequence[int] | int,
        *,
        k: int = 1,
        method: Method = "cd",
        n_chains: int = 100,
        init_std: float = 0.01,
        n_classes: int | None = None,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        sizes = layer_sizes(n_visible, hidden)
        check_method(method)
        self._config: dict[str, Any] = {
            "n_visible": n_visible,
            "hidden": sizes[1:],
            "k": k,
            "method": method,
            "n_chains": n_chains,
            "init_std": init_std,
            "n_classes": None,
            "seed": seed,
            "dtype": dtype,
        }
        self.sizes = sizes
        self.layers = nn.ModuleList(
            RBM(
                a,
                b,
                k=k,
                method=method,
                n_chains=n_chains,
                init_std=init_std,
                seed=seed + i,
                dtype=dtype,
                device=device,
            )
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        )
        self.register_module("head", None)
        if n_classes is not None:
            self._make_head(n_classes)

    def _make_head(self, n_classes: int) -> None:
        check_positive_int(n_classes, "n_classes", minimum=2)
        W = self.layers[0].frame.W
        head = nn.Linear(self.sizes[-1], n_classes, dtype=W.dtype, device=W.device)
        with torch.no_grad():  # the tutorial's logistic layer starts at zero (convex on its own)
            head.weight.zero_()
            head.bias.zero_()
        self.head = head
        self._config["n_classes"] = n_classes

    @property
    def _anchor(self) -> Tensor:
        return self.layers[0].frame.W

    # ----------------------------------------------------------------- conditionals
    def up(self, x: Tensor, layer: int) -> Tensor:
        """Recognition ``q(h^{layer+1} = 1 | h^layer = x)``: layer RBM's hidden conditional."""
        f = self.layers[layer].frame
        return hidden_mean(x, f.W, f.b_h)

    def down(self, h: Tensor, layer: int) -> Tensor:
        """Generative ``p(h^layer = 1 | h^{layer+1} = h)``: layer RBM's visible conditional."""
        f = self.layers[layer].frame
        return visible_mean(h, f.W, f.b_v)

    def up_pass(self, v: Tensor) -> list[Tensor]:
        """Mean activities ``[v, μ¹, …, μ^L]`` of the deterministic up-pass."""
        out = [v]
        for layer in range(len(self.layers)):
            out.append(self.up(out[-1], layer))
        return out

    # ----------------------------------------------------------------- training
    def fit(
        self,
        X: Any,
        *,
        epochs: int = 10,
        batch_size: int = 100,
        lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        callbacks: Sequence[Any] = (),
        progress: bool = False,
        **train_options: Any,
    ) -> DBN:
        """Greedy layer-wise training: each RBM through ``training.fit`` for ``epochs`` epochs on
        the up-pass probabilities of the one below (layer ``l`` shuffles with ``seed + l``)."""
        self.fit_results_ = train_greedily(
            self.layers,
            self._data(X),
            self.up,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            progress=progress,
            **train_options,
        )
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, n_classes)`` of the up-pass followed by the softmax layer."""
        if self.head is None:
            raise InputError(
                error_message(
                    "DBN output layer",
                    "a softmax layer",
                    "none (the DBN has not been fine-tuned)",
                    "call fine_tune(X, y) first",
                )
            )
        return self.head(self.up_pass(x)[-1])

    def fine_tune(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int = 10,
        batch_size: int = 100,
        lr: float = 0.1,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        valid: tuple[Any, Any] | None = None,
        callbacks: Sequence[Any] = (),
        progress: bool = False,
        **train_options: Any,
    ) -> DBN:
        """Supervised fine-tuning by backpropagation: the up-pass (weights and hidden biases of
        every layer) plus a softmax layer over ``n_classes = max(y) + 1`` classes, trained on the
        cross-entropy through ``training.fit``. ``valid = (X_valid, y_valid)`` reports
        ``valid_error`` per epoch."""
        x = self._data(X)
        labels = self._labels(y, x.shape[0])
        n_classes = int(labels.max()) + 1
        if self.head is None:
            self._make_head(max(2, n_classes))
        elif n_classes > self.head.out_features:
            raise InputError(
                error_message(
                    "y",
                    f"labels in 0..{self.head.out_features - 1} (the output layer's classes)",
                    f"label {n_classes - 1}",
                    "relabel the classes or build a new DBN",
                )
            )
        packed = torch.cat([x, labels.to(x.dtype)[:, None]], 1)
        valid_t = None
        if valid is not None:
            vx = self._data(valid[0], "valid X")
            valid_t = torch.cat([vx, self._labels(valid[1], vx.shape[0]).to(vx.dtype)[:, None]], 1)
        self.fine_tune_result_ = train(
            _Classifier(self),
            packed,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            valid=valid_t,
            callbacks=callbacks,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            progress=progress,
            **train_options,
        )
        return self

    def _labels(self, y: Any, n: int) -> Tensor:
        t = as_data_tensor(y, "y", ndim=1, dtype=torch.float64, device=self.device)
        if t.shape[0] != n or bool(((t < 0) | (t != t.round())).any()):
            raise InputError(
                error_message(
                    "y",
                    f"{n} integer class labels ≥ 0 (one per row of X)",
                    f"{t.shape[0]} labels in [{float(t.min()):g}, {float(t.max()):g}]",
                    "pass integer labels 0..n_classes−1",
                )
            )
        return t.long()

    # ----------------------------------------------------------------- inference
    def transform(self, X: Any) -> Tensor:
        """Top-layer features: the up-pass means ``μ^L``, ``(N, hidden[-1])``."""
        with torch.no_grad():
            return self.up_pass(self._data(X))[-1]

    def predict_proba(self, X: Any) -> Tensor:
        """Class probabilities ``(N, n_classes)`` after ``fine_tune``."""
        with torch.no_grad():
            return torch.softmax(self(self._data(X)), -1)

    def predict(self, X: Any) -> Tensor:
        """Most probable class per row, ``(N,)`` int64."""
        return self.predict_proba(X).argmax(-1)

    # ----------------------------------------------------------------- sampling hooks
    def _chain_from(self, v: Tensor) -> Tensor:
        """The top RBM's visible state from data: the up-pass of ``v`` to layer ``L − 1``."""
        return self.up_pass(v)[-2]

    @property
    def _chain_width(self) -> int:
        return self.sizes[-2]

    def _sweeps(self, x: Tensor, steps: int, generator: torch.Generator | None) -> GibbsState:
        """Gibbs steps in the top RBM (the undirected part of the DBN)."""
        f = self.layers[-1].frame
        return gibbs_chain(x, f.W, f.b_v, f.b_h, steps, generator)

    def _read_visible(
        self, state: GibbsState, generator: torch.Generator | None, mean: bool
    ) -> Tensor:
        """From the top RBM's visible state down to ``v`` by the directed layers (samples; the
        visible means at the bottom when ``mean``)."""
        if len(self.layers) == 1:
            return state.v_mean if mean else state.v
        x = state.v
        for layer in range(len(self.layers) - 2, -1, -1):
            p = self.down(x, layer)
            x = p if (mean and layer == 0) else bernoulli(p, generator)
        return x

    # ----------------------------------------------------------------- likelihood
    def log_partition(
        self,
        method: Literal["exact", "ais"] = "ais",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, str]:
        """``(log Z, s.e., estimator)`` of the top RBM, float64 scalars: ``"exact"`` (choose it
        when ``core.partition.exact_is_affordable`` holds) or AIS from the base rate of the
        up-pass it was trained on."""
        top = self.layers[-1]
        options = ais_options(method, n_runs, n_betas, generator, top.base_visible_bias)
        log_z, se, how = top.frame.log_partition(None, method, **options)
        return log_z.reshape(()), se.reshape(()), how

    def bound(
        self, X: Any, *, n_samples: int = 10, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Unnormalised variational bound per row and its Monte-Carlo s.e., float64 ``(N,)``.

        ``E_q[log p(v|h¹) + Σ_{l=2}^{L−1} log p(h^{l−1}|h^l) − F_top(h^{L−1})
        − Σ_l log q(h^l|h^{l−1})]`` (Salakhutdinov & Murray 2008, §5) with ``q`` the factorial
        up-pass, from ``n_samples`` draws of ``q`` per row; subtract ``log Z_top`` for a bound on
        ``log p(v)``. With one layer it is ``−F(v)`` exactly (s.e. 0)."""
        v = self._data(X, binary=True)
        S = check_positive_int(n_samples, "n_samples")
        f64 = torch.float64
        with torch.no_grad():
            if len(self.layers) == 1:
                value = -self.layers[0].frame.free_energy(v).double()
                return value, torch.zeros_like(value)
            x = v.repeat(S, 1)  # row s·N + n is draw s of example n
            total = torch.zeros(x.shape[0], dtype=f64, device=v.device)
            for layer in range(len(self.layers) - 1):
                f = self.layers[layer].frame
                a_up = hidden_preactivation(x, f.W, f.b_h)
                h = bernoulli(torch.sigmoid(a_up), generator)
                a_down = visible_preactivation(h, f.W, f.b_v)
                # + log p(x | h) − log q(h | x), Bernoulli log-probabilities from the logits
                total -= F.binary_cross_entropy_with_logits(
                    a_down.double(), x.double(), reduction="none"
                ).sum(-1)
                total += F.binary_cross_entropy_with_logits(
                    a_up.double(), h.double(), reduction="none"
                ).sum(-1)
                x = h
            total -= self.layers[-1].frame.free_energy(x).double()
            draws = total.reshape(S, -1)
            se = draws.std(0, correction=1) / math.sqrt(S) if S > 1 else torch.zeros_like(draws[0])
            return draws.mean(0), se

    def log_likelihood(
        self,
        X: Any,
        method: Literal["exact", "ais"] = "ais",
        *,
        n_samples: int = 10,
        n_runs: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
        log_partition: tuple[Tensor, Tensor, str] | None = None,
    ) -> LogProb:
        """Per-row lower bound on ``log p(v)`` in nats: ``bound(X) − log Z_top``.

        ``log Z_top`` comes from ``log_partition(method, …)`` unless a precomputed
        ``log_partition`` tuple is given. ``se`` per row combines the s.e. of ``log Z_top``
        (shared by all rows) and the row's Monte-Carlo s.e.; with one layer this is the RBM's
        log-likelihood (exact for exact ``log Z``)."""
        log_z, se_z, how = log_partition or self.log_partition(
            method, n_runs=n_runs, n_betas=n_betas, generator=generator
        )
        value, se_mc = self.bound(X, n_samples=n_samples, generator=generator)
        se = torch.sqrt(se_z.double() ** 2 + se_mc**2)
        if len(self.layers) == 1:
            return LogProb(value - log_z, se, how)
        return LogProb(value - log_z, se, f"dbn-bound(samples={n_samples}), top log Z {how}")
