"""Deep models stacked from the conditional-RBM core: DBN and DBM (DESIGN §1, §3).

**DBN** (Hinton, Osindero & Teh 2006): a stack of core RBMs (``models.rbm.RBM``) trained
greedily, layer ``l`` on the up-pass probabilities of layer ``l − 1``, each through the shared
``training.fit`` loop. The generative model is the top RBM over ``(h^{L−1}, h^L)`` with directed
sigmoid layers below it (each lower RBM's visible conditional); generation is Gibbs sampling in
the top RBM followed by one down-pass. ``fine_tune`` adds a softmax output layer and trains the
whole up-pass by backpropagation (the deeplearning.net DBN tutorial's recipe).
``log_likelihood`` is the variational lower bound of Salakhutdinov & Murray (2008, §5) with the
factorial recognition distribution ``q(h^l | h^{l−1})`` (the up-pass), estimated with samples of
``q`` and ``log Z`` of the top RBM (exact or AIS).

**DBM** (Salakhutdinov & Hinton 2009, "Deep Boltzmann Machines", AISTATS; "S&H"): Bernoulli layers
``0`` (visible), ``1 … L`` with energy ``E = −Σ_l h^l·b^l − Σ_{l=1..L} h^{l−1}ᵀ W^l h^l``. Only
adjacent layers interact, so the *even* layers ``(0, 2, …)`` and the *odd* layers ``(1, 3, …)`` are
the two sides of one bipartite graph: **a DBM is a core RBM** whose "visible" side is the even
layers and whose "hidden" side is the odd layers, with the block weight matrix ``W_eo``
(``bipartite()``). Everything below reuses the core on that RBM:

* the conditional of a middle layer given both neighbours is the core hidden conditional with a
  top-down offset (``layer_mean``),
  ``P(h^l = 1 | h^{l−1}, h^{l+1}) = hidden_mean(h^{l−1}, W^l, b^l + h^{l+1} W^{l+1}ᵀ)``;
  all odd layers at once are ``hidden_mean(even, W_eo, b_odd)`` and all even layers
  ``visible_mean(odd, W_eo, b_even)``;
* sampling (alternating Gibbs over odd/even layers) is ``core.rbm.gibbs_chain`` on ``W_eo``;
* mean-field (S&H §3) alternates the same two conditionals with means, the visible layer clamped;
  each half-step maximises the variational bound exactly over one block, so it converges;
* PCD training is ``core.contrastive.contrastive_loss`` with positive rows ``(v, μ², μ⁴, …)`` (the
  even part of the mean-field posterior) and negative rows from ``PersistentChains`` over the even
  layers: the free energy sums the odd layers out, and at a mean-field fixed point its gradient is
  exactly the mean-field data statistics minus the model statistics (S&H eq. 7–8);
* exact ``log Z`` is ``core.partition.log_partition_exact`` on the bipartite RBM, and AIS is
  ``log_partition_ais`` on its transpose: the **odd layers are the annealed state and the even
  layers (v, h², …) are summed out analytically** (S&H §4 anneal ``h¹`` with ``v, h²`` summed out);
  the interaction strength ``β W`` and the biases are annealed from a base-rate model over the odd
  layers (``base_odd_bias``, set from the mean-field posteriors of the training data);
* the variational lower bound ``log p(v) ≥ −F(v, μ²,…) + H(q_even) − log Z``, the mean-field ELBO
  with the odd layers at their optimal factors (``elbo``).

Greedy pretraining uses S&H's doubling trick: the RBM between layers ``l − 1`` and ``l`` has its
upward input doubled when layer ``l`` has a layer above it (the visible copies twice, tied weights)
and its downward input doubled when layer ``l − 1`` has a layer below it (the hidden copies twice),
so that in the composed DBM every middle layer gets half its input from each neighbour. The copies
are real units of a core RBM with tied weights (``W`` repeated), trained by the same
``contrastive_loss`` through ``training.fit``.

``fit`` / ``save`` / ``load`` import the training loop and the checkpoint module inside the method
(they sit above ``models`` in the layer stack), like ``RBM``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnrbm.core.contrastive import PersistentChains, contrastive_loss, negative_samples
from rnnrbm.core.estimators import LogProb
from rnnrbm.core.partition import (
    MAX_ENUMERATED_UNITS,
    all_binary_states,
    base_rate_visible_bias,
    log_partition_ais,
    log_partition_exact,
)
from rnnrbm.core.rbm import (
    GibbsState,
    bernoulli,
    free_energy,
    gibbs_chain,
    hidden_mean,
    hidden_preactivation,
    visible_mean,
    visible_preactivation,
)
from rnnrbm.models.rbm import RBM
from rnnrbm.models.registry import register_model
from rnnrbm.validation import (
    InputError,
    as_data_tensor,
    check_binary,
    check_positive_int,
    error_message,
)

__all__ = ["DBM", "DBN"]

Method = Literal["cd", "pcd"]


# ------------------------------------------------------------------------------------ helpers
def _layer_sizes(n_visible: int, hidden: Sequence[int] | int) -> list[int]:
    check_positive_int(n_visible, "n_visible")
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence) or not hidden:
        raise InputError(
            error_message(
                "hidden", "a non-empty list of layer sizes", repr(hidden), "pass e.g. [500, 1000]"
            )
        )
    return [n_visible, *(check_positive_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))]


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(error_message("dtype", "'float32' or 'float64'", repr(name), "pick one"))
    return dtype


def _check_method(method: str, name: str = "method") -> None:
    if method not in ("cd", "pcd"):
        raise InputError(error_message(name, "'cd' or 'pcd'", repr(method), "pick one"))


def _check_unit_interval(x: Tensor, name: str) -> Tensor:
    if bool(((x < 0) | (x > 1)).any()):
        raise InputError(
            error_message(
                name,
                "values in [0, 1] (binary pixels or grey levels)",
                f"range [{float(x.min()):g}, {float(x.max()):g}]",
                "scale the data to [0, 1] (e.g. divide 8-bit pixels by 255)",
            )
        )
    return x


def _entropy(p: Tensor) -> Tensor:
    """Summed Bernoulli entropy ``−Σ p log p + (1−p) log(1−p)`` (nats), 0 at p ∈ {0, 1}."""
    return (torch.special.entr(p) + torch.special.entr(1.0 - p)).sum(-1)


def _train(
    model: nn.Module,
    data: Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    valid: Any = None,
    callbacks: Sequence[Any] = (),
    **options: Any,
) -> Any:
    """Run THE training loop (imported here: ``training`` sits above ``models``)."""
    from rnnrbm.training import RowBatches, TrainConfig, fit

    batch_size = check_positive_int(batch_size, "batch_size")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, **options)
    return fit(model, RowBatches(data, batch_size, seed=seed), valid, config, callbacks)


class _Persistence:
    """``save`` / ``load`` through ``checkpoint`` (model type + ``config()`` + tensors)."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an atomic safetensors checkpoint (weights, config, chains, AIS base)."""
        from rnnrbm.checkpoint import save_checkpoint

        return save_checkpoint(path, self)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> Any:
        """Load a checkpoint written by ``save`` (no hyper-parameters needed)."""
        from rnnrbm.checkpoint import load_checkpoint

        model = load_checkpoint(path, device=device).model
        if not isinstance(model, cls):
            raise InputError(
                error_message(
                    f"checkpoint {path}",
                    f"a {cls.__name__}",
                    f"a {type(model).__name__}",
                    f"load it with {type(model).__name__}.load",
                )
            )
        return model


# ------------------------------------------------------------------------------------ DBN
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
class DBN(_Persistence, nn.Module):
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
        sizes = _layer_sizes(n_visible, hidden)
        _check_method(method)
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

    # ----------------------------------------------------------------- config & shapes
    def config(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DBN:
        return cls(**config)

    @property
    def n_visible(self) -> int:
        return self.sizes[0]

    @property
    def device(self) -> torch.device:
        return self.layers[0].frame.W.device

    def _data(self, x: Any, name: str = "X", *, binary: bool = False) -> Tensor:
        W = self.layers[0].frame.W
        t = as_data_tensor(x, name, n_features=self.n_visible, dtype=W.dtype, device=W.device)
        return check_binary(t, name) if binary else _check_unit_interval(t, name)

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
        x = self._data(X)
        self.fit_results_ = []
        for i, rbm in enumerate(self.layers):
            result = _train(
                rbm,
                x,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed + i,
                callbacks=callbacks,
                lr=lr,
                optimizer=optimizer,
                momentum=momentum,
                weight_decay=weight_decay,
                progress=progress,
                **train_options,
            )
            self.fit_results_.append(result)
            with torch.no_grad():
                x = self.up(x, i)
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
        self.fine_tune_result_ = _train(
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

    def _top_start(self, n: int | None, start: Any, generator: torch.Generator | None) -> Tensor:
        """The top RBM's visible state: the up-pass of ``start`` or uniform random bits."""
        if start is not None:
            return self.up_pass(self._data(start, "start"))[-2]
        top = self.layers[-1].frame
        u = torch.rand(
            (check_positive_int(n, "n"), top.n_visible),
            generator=generator,
            dtype=top.W.dtype,
            device=top.W.device,
        )
        return (u < 0.5).to(top.W.dtype)

    def _down_pass(
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

    def _top_gibbs(self, x: Tensor, steps: int, generator: torch.Generator | None) -> GibbsState:
        f = self.layers[-1].frame
        return gibbs_chain(x, f.W, f.b_v, f.b_h, steps, generator)

    def sample(
        self,
        n: int | None = None,
        steps: int = 1000,
        generator: torch.Generator | None = None,
        *,
        start: Any = None,
        mean: bool = False,
    ) -> Tensor:
        """Visible samples ``(n, n_visible)``: ``steps`` Gibbs steps in the top RBM (from random
        bits, or from the up-pass of ``start``) followed by a down-pass; ``mean=True`` returns
        ``E[v | h¹]`` at the bottom instead of a draw."""
        with torch.no_grad():
            x = self._top_start(n, start, generator)
            state = self._top_gibbs(x, check_positive_int(steps, "steps"), generator)
            return self._down_pass(state, generator, mean)

    def sample_chains(
        self,
        start: Any,
        n_rows: int = 10,
        steps_per_row: int = 100,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Persistent chains for pictures: ``(n_rows, N, n_visible)``; row 0 is ``start`` and
        row ``r`` the visible means after ``r · steps_per_row`` top-level Gibbs steps (the top
        state persists from row to row; each row is a fresh down-pass)."""
        check_positive_int(n_rows, "n_rows")
        steps = check_positive_int(steps_per_row, "steps_per_row")
        with torch.no_grad():
            v0 = self._data(start, "start")
            x = self._top_start(None, v0, generator)
            rows = [v0]
            for _ in range(n_rows - 1):
                state = self._top_gibbs(x, steps, generator)
                x = state.v
                rows.append(self._down_pass(state, generator, mean=True))
            return torch.stack(rows)

    # ----------------------------------------------------------------- likelihood
    def log_partition(
        self,
        method: Literal["exact", "ais"] = "ais",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, str]:
        """``(log Z, s.e., estimator)`` of the top RBM, float64 scalars: exact (a layer ≤ 25
        units) or AIS from the base rate of the up-pass it was trained on."""
        top = self.layers[-1]
        options: dict[str, Any] = {}
        if method == "ais":
            options = {
                "n_runs": n_runs,
                "n_betas": n_betas,
                "generator": generator,
                "base_visible_bias": top.base_visible_bias,
            }
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


# ------------------------------------------------------------------------------------ DBM
class _LayerRBM(nn.Module):
    """A pretraining RBM with S&H's tied copies: ``copies_in`` visible copies (doubles the upward
    input) and ``copies_out`` hidden copies (doubles the downward input). It is the core RBM with
    weights ``W`` repeated ``copies_in × copies_out`` times, so CD/PCD, sampling and the
    surrogate loss are the core's; the gradient w.r.t. the shared ``W`` sums over the copies."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        copies_in: int,
        copies_out: int,
        *,
        k: int,
        method: Method,
        n_chains: int,
        init_std: float,
        generator: torch.Generator,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.copies_in, self.copies_out, self.k, self.method = copies_in, copies_out, k, method
        w = torch.randn(n_in, n_out, generator=generator, dtype=dtype) * init_std
        self.W = nn.Parameter(w.to(device))
        self.b_v = nn.Parameter(torch.zeros(n_in, dtype=dtype, device=device))
        self.b_h = nn.Parameter(torch.zeros(n_out, dtype=dtype, device=device))
        self.chains = PersistentChains(n_chains, n_in * copies_in, dtype=dtype, device=device)

    def tied(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W, b_v, b_h)`` of the copied RBM: ``W`` tiled, biases repeated per copy."""
        ci, co = self.copies_in, self.copies_out
        return self.W.repeat(ci, co), self.b_v.repeat(ci), self.b_h.repeat(co)

    def loss(
        self, batch: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        v = batch.repeat(1, self.copies_in)  # every visible copy is clamped to the data
        W, b_v, b_h = self.tied()
        with torch.no_grad():
            if self.method == "pcd":
                v_neg = self.chains.advance(W, b_v, b_h, self.k, generator, data=v)
            else:
                v_neg = negative_samples(v, W, b_v, b_h, self.k, generator)
        loss, f_pos, _ = contrastive_loss(v, v_neg, W, b_v, b_h)
        return loss, {"free_energy_data": f_pos.mean()}

    def on_fit_start(self, train: Any, resumed: bool = False) -> None:
        """Visible biases at the log-odds of the data marginals (Hinton 2010 §8)."""
        data = getattr(train, "data", None)
        if data is not None and not resumed:
            with torch.no_grad():
                self.b_v.copy_(base_rate_visible_bias(data))

    def up(self, x: Tensor) -> Tensor:
        """``P(h = 1 | x)`` of one hidden copy given all visible copies at ``x``."""
        return hidden_mean(x, self.copies_in * self.W, self.b_h)


@register_model("dbm")
class DBM(_Persistence, nn.Module):
    """A deep Boltzmann machine of any depth (Salakhutdinov & Hinton 2009); see the module doc.

    Parameters
    ----------
    n_visible : visible units (binary).
    hidden : hidden layer sizes ``[n_1, …, n_L]``, bottom to top.
    k : Gibbs sweeps (odd then even layers) of the persistent chains per update (PCD-k).
    n_chains : persistent chains ("fantasy particles"; S&H used 100).
    mean_field_steps : mean-field sweeps per training batch (S&H: 10; ``tol`` for evaluation).
    init_std : standard deviation of the initial weights.
    seed : seeds the initial weights (training randomness is seeded by ``fit(seed=...)``).

    Parameters live in ``W[l − 1]`` (``W^l``, shape ``(n_{l−1}, n_l)``) and ``b[l]``.
    """

    model_type = "dbm"

    def __init__(
        self,
        n_visible: int,
        hidden: Sequence[int] | int,
        *,
        k: int = 1,
        n_chains: int = 100,
        mean_field_steps: int = 10,
        init_std: float = 0.01,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        sizes = _layer_sizes(n_visible, hidden)
        check_positive_int(k, "k")
        check_positive_int(n_chains, "n_chains")
        check_positive_int(mean_field_steps, "mean_field_steps")
        torch_dtype = _torch_dtype(dtype)
        self._config: dict[str, Any] = {
            "n_visible": n_visible,
            "hidden": sizes[1:],
            "k": k,
            "n_chains": n_chains,
            "mean_field_steps": mean_field_steps,
            "init_std": init_std,
            "seed": seed,
            "dtype": dtype,
        }
        self.sizes, self.k, self.mean_field_steps = sizes, k, mean_field_steps
        self.even = tuple(range(0, len(sizes), 2))
        self.odd = tuple(range(1, len(sizes), 2))
        gen = torch.Generator().manual_seed(seed)
        weights = [
            torch.randn(a, b, generator=gen, dtype=torch_dtype) * init_std
            for a, b in itertools.pairwise(sizes)
        ]
        self.W = nn.ParameterList(nn.Parameter(w.to(device)) for w in weights)
        self.b = nn.ParameterList(
            nn.Parameter(torch.zeros(n, dtype=torch_dtype, device=device)) for n in sizes
        )
        n_even = sum(sizes[i] for i in self.even)
        n_odd = sum(sizes[i] for i in self.odd)
        self.chains = PersistentChains(n_chains, n_even, dtype=torch_dtype, device=device)
        # AIS base-rate biases of the odd layers (the annealed state), set by fit().
        self.register_buffer("base_odd_bias", torch.zeros(n_odd, dtype=torch_dtype, device=device))

    # ----------------------------------------------------------------- config & shapes
    def config(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DBM:
        return cls(**config)

    @property
    def n_visible(self) -> int:
        return self.sizes[0]

    @property
    def n_layers(self) -> int:
        """Number of hidden layers ``L``."""
        return len(self.sizes) - 1

    @property
    def device(self) -> torch.device:
        return self.b[0].device

    def _data(self, x: Any, name: str = "X", *, binary: bool = False) -> Tensor:
        t = as_data_tensor(
            x, name, n_features=self.n_visible, dtype=self.b[0].dtype, device=self.device
        )
        return check_binary(t, name) if binary else _check_unit_interval(t, name)

    # ----------------------------------------------------------------- the bipartite view
    def bipartite(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_eo (n_even, n_odd), b_even, b_odd)``: the DBM as one RBM between its even
        layers (rows, in layer order) and odd layers (columns). Differentiable; the blocks of
        non-adjacent layers are zero."""
        rows = []
        for e in self.even:
            blocks = []
            for o in self.odd:
                if o == e + 1:
                    blocks.append(self.W[e])  # W^{e+1}: (n_e, n_{e+1})
                elif o == e - 1:
                    blocks.append(self.W[o].T)  # W^{e}: (n_{e−1}, n_e), transposed
                else:
                    blocks.append(self.W[0].new_zeros(self.sizes[e], self.sizes[o]))
            rows.append(torch.cat(blocks, 1))
        b_even = torch.cat([self.b[i] for i in self.even])
        b_odd = torch.cat([self.b[i] for i in self.odd])
        return torch.cat(rows, 0), b_even, b_odd

    def join(self, states: Sequence[Tensor], parity: Literal["even", "odd"]) -> Tensor:
        """Concatenate the even (or odd) layers of ``states = [h⁰, …, h^L]`` into one row."""
        return torch.cat([states[i] for i in (self.even if parity == "even" else self.odd)], -1)

    def split(self, x: Tensor, parity: Literal["even", "odd"]) -> dict[int, Tensor]:
        """Inverse of ``join``: layer index → its slice of ``x``."""
        layers = self.even if parity == "even" else self.odd
        return dict(zip(layers, torch.split(x, [self.sizes[i] for i in layers], -1), strict=True))

    def _states(self, even: Tensor, odd: Tensor) -> list[Tensor]:
        parts = self.split(even, "even") | self.split(odd, "odd")
        return [parts[i] for i in range(len(self.sizes))]

    def layer_mean(self, layer: int, states: Sequence[Tensor]) -> Tensor:
        """``P(h^layer = 1 | neighbours)`` from ``states = [h⁰, …, h^L]`` (others ignored).

        A middle layer is the core hidden conditional of the RBM below it with the top-down
        input as a per-example bias offset: ``hidden_mean(h^{l−1}, W^l, b^l + h^{l+1} W^{l+1}ᵀ)``
        (DESIGN §1); the top layer has no offset; the visible layer is ``visible_mean``."""
        if layer == 0:
            return visible_mean(states[1], self.W[0], self.b[0])
        bias = self.b[layer]
        if layer < self.n_layers:
            bias = bias + states[layer + 1] @ self.W[layer].T
        return hidden_mean(states[layer - 1], self.W[layer - 1], bias)

    # ----------------------------------------------------------------- mean-field
    def _bottom_up(self, v: Tensor) -> list[Tensor]:
        """S&H's initialisation: one up-pass with doubled weights into layers that have a layer
        above (standing in for the missing top-down input), single weights into the top."""
        states = [v]
        for layer in range(1, len(self.sizes)):
            scale = 2.0 if layer < self.n_layers else 1.0
            W, b = self.W[layer - 1].to(v.dtype), self.b[layer].to(v.dtype)
            states.append(hidden_mean(states[-1], scale * W, b))
        return states

    def _mean_field(
        self,
        v: Tensor,
        W: Tensor,
        b_even: Tensor,
        b_odd: Tensor,
        steps: int,
        tol: float,
    ) -> tuple[Tensor, Tensor, int]:
        """Fixed-point iteration on the bipartite RBM with ``v`` clamped; returns the even and
        odd means and the number of sweeps run. Ends with an odd update, so the odd layers are
        the exact optimum given the even ones."""
        n_v = self.n_visible
        even = self.join(self._bottom_up(v), "even")
        done = 0
        if len(self.even) > 1:  # with one hidden layer the posterior is exact in one step
            for sweep in range(1, steps + 1):
                done = sweep
                odd = hidden_mean(even, W, b_odd)
                new = visible_mean(odd, W, b_even)
                new[:, :n_v] = v
                delta = float((new - even).abs().max()) if tol > 0 else math.inf
                even = new
                if delta <= tol:
                    break
        return even, hidden_mean(even, W, b_odd), done

    def mean_field(self, X: Any, *, steps: int | None = None, tol: float = 0.0) -> list[Tensor]:
        """Mean-field posterior ``q(h | v) = Π Bernoulli(μ)``: ``[v, μ¹, …, μ^L]``.

        Alternates the odd-layer and even-layer updates (``steps`` sweeps, default
        ``mean_field_steps``; stops early when no mean moves by more than ``tol``)."""
        v = self._data(X)
        with torch.no_grad():
            W, b_e, b_o = self.bipartite()
            steps = self.mean_field_steps if steps is None else check_positive_int(steps, "steps")
            even, odd, _ = self._mean_field(v, W, b_e, b_o, steps, tol)
        return self._states(even, odd)

    def transform(self, X: Any, layer: int | None = None) -> Tensor:
        """Mean-field posterior means: all hidden layers concatenated ``(N, Σ n_l)``, or the
        means of hidden layer ``layer`` (1-based, as in ``h^layer``)."""
        states = self.mean_field(X, steps=max(self.mean_field_steps, 30), tol=1e-5)
        if layer is None:
            return torch.cat(states[1:], -1)
        if not 1 <= layer <= self.n_layers:
            raise InputError(
                error_message("layer", f"1..{self.n_layers}", repr(layer), "pick a hidden layer")
            )
        return states[layer]

    # ----------------------------------------------------------------- training
    def loss(
        self, batch: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """PCD surrogate (S&H Algorithm 1): mean-field positive statistics, persistent-chain
        negatives, one ``contrastive_loss`` on the bipartite RBM."""
        W, b_e, b_o = self.bipartite()
        with torch.no_grad():
            Wd, bed, bod = W.detach(), b_e.detach(), b_o.detach()
            pos, _, _ = self._mean_field(batch, Wd, bed, bod, self.mean_field_steps, 0.0)
            neg = self.chains.advance(Wd, bed, bod, self.k, generator, data=pos)
        loss, f_pos, _ = contrastive_loss(pos, neg, W, b_e, b_o)
        return loss, {"free_energy_data": f_pos.mean()}

    def validate(self, valid: Tensor) -> dict[str, float]:
        """Reconstruction cross-entropy of ``v`` from its mean-field ``μ¹`` (nats per row)."""
        with torch.no_grad():
            states = self.mean_field(valid)
            logits = visible_preactivation(states[1], self.W[0], self.b[0])
            xent = F.binary_cross_entropy_with_logits(logits, valid, reduction="none").sum(-1)
        return {"recon_xent": float(xent.mean())}

    def pretrain(
        self,
        X: Any,
        *,
        epochs: int = 10,
        batch_size: int = 100,
        lr: float = 0.01,
        method: Method = "cd",
        k: int = 1,
        seed: int = 0,
        callbacks: Sequence[Any] = (),
        **train_options: Any,
    ) -> DBM:
        """Greedy layer-wise pretraining with S&H's doubled inputs, each RBM through
        ``training.fit``; then compose: ``W^l`` from RBM ``l``, the visible bias from the
        bottom RBM, the top bias from the top RBM, and each middle bias the mean of the
        hidden bias below and the visible bias above (each RBM saw half of the layer's input)."""
        _check_method(method)
        x = self._data(X)
        L = self.n_layers
        rbms = []
        self.pretrain_results_ = []
        gen = torch.Generator().manual_seed(self._config["seed"] + 7919)
        for i in range(L):
            rbm = _LayerRBM(
                self.sizes[i],
                self.sizes[i + 1],
                copies_in=2 if i + 1 < L else 1,  # layer i+1 has a layer above it
                copies_out=2 if i >= 1 else 1,  # layer i has a layer below it
                k=check_positive_int(k, "k"),
                method=method,
                n_chains=self._config["n_chains"],
                init_std=self._config["init_std"],
                generator=gen,
                dtype=self.b[0].dtype,
                device=self.device,
            )
            result = _train(
                rbm,
                x,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed + i,
                callbacks=callbacks,
                lr=lr,
                **train_options,
            )
            self.pretrain_results_.append(result)
            rbms.append(rbm)
            with torch.no_grad():
                x = rbm.up(x)
        with torch.no_grad():
            for i, rbm in enumerate(rbms):
                self.W[i].copy_(rbm.W)
            self.b[0].copy_(rbms[0].b_v)
            self.b[L].copy_(rbms[-1].b_h)
            for layer in range(1, L):
                self.b[layer].copy_(0.5 * (rbms[layer - 1].b_h + rbms[layer].b_v))
        # Fresh persistent chains: they restart from data rows at the first joint update.
        self.chains = PersistentChains(
            self.chains.state.shape[0], self.chains.state.shape[1],
            dtype=self.b[0].dtype, device=self.device,
        )  # fmt: skip
        return self

    def fit(
        self,
        X: Any,
        *,
        epochs: int = 10,
        pretrain_epochs: int | None = None,
        batch_size: int = 100,
        lr: float = 0.005,
        pretrain_lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        valid: Any = None,
        callbacks: Sequence[Any] = (),
        progress: bool = False,
        **train_options: Any,
    ) -> DBM:
        """Greedy pretraining (``pretrain_epochs`` per layer, default ``epochs``; 0 skips it),
        then joint PCD + mean-field training for ``epochs`` through ``training.fit``; finally
        sets the AIS base rate from the training posteriors. Returns self."""
        data = self._data(X)
        valid_t = self._data(valid, "valid") if valid is not None else None
        common = {
            "optimizer": optimizer,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "progress": progress,
        }
        n_pre = epochs if pretrain_epochs is None else pretrain_epochs
        if n_pre > 0:
            self.pretrain(data, epochs=n_pre, batch_size=batch_size, lr=pretrain_lr, seed=seed,
                          callbacks=callbacks, **common)  # fmt: skip
        else:
            with torch.no_grad():
                self.b[0].copy_(base_rate_visible_bias(data))
        self.fit_result_ = _train(
            self,
            data,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            valid=valid_t,
            callbacks=callbacks,
            lr=lr,
            **common,
            **train_options,
        )
        self.set_ais_base(data)
        return self

    def set_ais_base(self, X: Any) -> None:
        """Base-rate model of AIS over the odd layers: log-odds of the mean-field posterior
        means of ``X`` (Salakhutdinov & Murray 2008 §4.2; any base is valid, a close one is
        cheaper)."""
        odd = self.join(self.mean_field(X), "odd")
        with torch.no_grad():
            self.base_odd_bias.copy_(base_rate_visible_bias(odd))

    # ----------------------------------------------------------------- sampling
    def _start_even(self, n: int | None, start: Any, generator: torch.Generator | None) -> Tensor:
        if start is not None:
            return self.join(self.mean_field(self._data(start, "start")), "even")
        n_even = sum(self.sizes[i] for i in self.even)
        u = torch.rand(
            (check_positive_int(n, "n"), n_even),
            generator=generator,
            dtype=self.b[0].dtype,
            device=self.device,
        )
        return (u < 0.5).to(self.b[0].dtype)

    def gibbs(
        self, even: Tensor, steps: int, generator: torch.Generator | None = None
    ) -> GibbsState:
        """``steps`` sweeps of alternating Gibbs (odd layers | even, then even | odd) from the
        even-layer state ``even``: ``core.rbm.gibbs_chain`` on the bipartite RBM. The returned
        state's ``v`` / ``v_mean`` are even-layer rows, ``h_mean`` the odd-layer means."""
        with torch.no_grad():
            W, b_e, b_o = self.bipartite()
            return gibbs_chain(even, W, b_e, b_o, check_positive_int(steps, "steps"), generator)

    def sample(
        self,
        n: int | None = None,
        steps: int = 1000,
        generator: torch.Generator | None = None,
        *,
        start: Any = None,
        mean: bool = False,
    ) -> Tensor:
        """Visible samples ``(n, n_visible)`` after ``steps`` Gibbs sweeps from random bits (or
        from ``start`` with its mean-field hidden layers); ``mean=True`` gives ``E[v | h¹]``."""
        with torch.no_grad():
            state = self.gibbs(self._start_even(n, start, generator), steps, generator)
            return (state.v_mean if mean else state.v)[:, : self.n_visible]

    def sample_chains(
        self,
        start: Any,
        n_rows: int = 10,
        steps_per_row: int = 100,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Persistent chains for pictures: ``(n_rows, N, n_visible)``; row 0 is ``start``, row
        ``r`` the visible means ``E[v | h¹]`` after ``r · steps_per_row`` sweeps (the full state
        persists from row to row)."""
        check_positive_int(n_rows, "n_rows")
        v0 = self._data(start, "start")
        with torch.no_grad():
            even = self._start_even(None, v0, generator)
            rows = [v0]
            for _ in range(n_rows - 1):
                state = self.gibbs(even, steps_per_row, generator)
                even = state.v
                rows.append(state.v_mean[:, : self.n_visible])
            return torch.stack(rows)

    # ----------------------------------------------------------------- likelihood
    def log_partition(
        self,
        method: Literal["exact", "ais"] = "ais",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, str]:
        """``(log Z, s.e., estimator)`` as float64 scalars.

        ``"exact"`` enumerates the smaller side of the bipartite RBM (≤ 25 units). ``"ais"``
        anneals the odd layers with the even layers summed out (see the module doc)."""
        with torch.no_grad():
            W, b_e, b_o = self.bipartite()
            if method == "exact":
                log_z = log_partition_exact(W, b_e, b_o)
                return log_z, torch.zeros_like(log_z), "exact"
            if method == "ais":
                res = log_partition_ais(
                    W.T.contiguous(),
                    b_o,
                    b_e,
                    n_runs=n_runs,
                    n_betas=n_betas,
                    base_visible_bias=self.base_odd_bias,
                    generator=generator,
                )
                how = f"ais(runs={n_runs}, betas={n_betas}, odd layers annealed)"
                return res.log_z[0], res.log_z_se[0], how
        raise InputError(error_message("method", "'exact' or 'ais'", repr(method), "pick one"))

    def elbo(self, X: Any, *, steps: int = 100, tol: float = 1e-6) -> Tensor:
        """Unnormalised variational bound ``log p*(v) ≥ −F(v, μ², …) + H(q_even)``, ``(N,)``
        float64 nats (subtract ``log Z`` for a bound on ``log p(v)``).

        ``q`` is the mean-field posterior (``steps`` sweeps, tolerance ``tol``). The odd layers
        are summed out analytically in ``F`` (core ``free_energy`` of the bipartite RBM), which
        equals the standard mean-field ELBO ``E_q[−E] + H(q)`` when the odd factors are at their
        optimum given the even ones (``mean_field`` ends with that update) and is never lower
        (Jensen: ``−F`` is convex in the even layers)."""
        v = self._data(X, binary=True)
        with torch.no_grad():
            W, b_e, b_o = (t.double() for t in self.bipartite())
            even, _, _ = self._mean_field(v.double(), W, b_e, b_o, steps, tol)
            hidden_even = even[:, self.n_visible :]
            return -free_energy(even, W, b_e, b_o) + _entropy(hidden_even)

    def _log_unnormalised_exact(self, v: Tensor, chunk_rows: int = 2**16) -> Tensor:
        """``log Σ_h exp(−E(v, h))`` by enumerating the even hidden layers (odd ones summed
        out analytically), float64 ``(N,)``."""
        W, b_e, b_o = (t.double() for t in self.bipartite())
        v = v.double()
        n_eh = sum(self.sizes[i] for i in self.even[1:])
        if n_eh == 0:
            return -free_energy(v, W, b_e, b_o)
        if n_eh > MAX_ENUMERATED_UNITS:
            raise InputError(
                error_message(
                    "DBM.log_likelihood(method='exact')",
                    f"at most {MAX_ENUMERATED_UNITS} units in the even hidden layers (h², h⁴, …)",
                    f"{n_eh}",
                    "use method='ais' (the ELBO with an AIS estimate of log Z)",
                )
            )
        N, total = v.shape[0], 1 << n_eh
        step = max(1, chunk_rows // N)
        out = torch.full((N,), -math.inf, dtype=torch.float64, device=v.device)
        for start in range(0, total, step):
            h = all_binary_states(
                n_eh, dtype=torch.float64, device=v.device, start=start,
                stop=min(start + step, total),
            )  # fmt: skip
            c = h.shape[0]
            even = torch.cat([v[:, None, :].expand(N, c, -1), h[None].expand(N, c, -1)], -1)
            neg_f = -free_energy(even.reshape(N * c, -1), W, b_e, b_o).reshape(N, c)
            out = torch.logaddexp(out, torch.logsumexp(neg_f, 1))
        return out

    def log_likelihood(
        self,
        X: Any,
        method: Literal["exact", "ais"] = "ais",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
        steps: int = 100,
        tol: float = 1e-6,
        log_partition: tuple[Tensor, Tensor, str] | None = None,
    ) -> LogProb:
        """Per-row ``log p(v)`` in nats (``log_partition``: a precomputed result of
        ``self.log_partition(method, …)`` to reuse).

        ``"exact"``: exact (even hidden layers ≤ 25 units summed by enumeration, exact ``log Z``).
        ``"ais"``: the variational lower bound ``elbo(X) − log Z`` with ``log Z`` from AIS —
        an estimate of a lower bound; ``se`` is the s.e. of ``log Z`` (the AIS estimate of
        ``log Z`` is itself biased low, so the bound can be optimistic when AIS misses modes)."""
        v = self._data(X, binary=True)
        log_z, se, how = log_partition or self.log_partition(
            method, n_runs=n_runs, n_betas=n_betas, generator=generator
        )
        with torch.no_grad():
            if method == "exact":
                value = self._log_unnormalised_exact(v) - log_z
                return LogProb(value, torch.zeros_like(value), "exact")
            value = self.elbo(v, steps=steps, tol=tol) - log_z
        return LogProb(value, se.expand_as(value), f"elbo(mean-field) − log Z by {how}")
