"""DBM: a deep Boltzmann machine built on the conditional-RBM core (docs/design.md §1, §3).

Salakhutdinov & Hinton (2009, "Deep Boltzmann Machines", AISTATS; "S&H"): Bernoulli layers
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
``contrastive_loss`` through ``training.fit`` (``models.stack.train_greedily``, as the DBN).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnrbm.core.contrastive import PersistentChains
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
    free_energy,
    gibbs_chain,
    hidden_mean,
    visible_mean,
    visible_preactivation,
)
from rnnrbm.models.rbm import Method, cd_loss, check_method
from rnnrbm.models.stack import LayerStack, layer_sizes, train, train_greedily
from rnnrbm.registry import register_model
from rnnrbm.validation import (
    InputError,
    check_choice,
    check_positive_int,
    error_message,
    parse_dtype,
)

__all__ = ["DBM"]


def _entropy(p: Tensor) -> Tensor:
    """Summed Bernoulli entropy ``−Σ p log p + (1−p) log(1−p)`` (nats), 0 at p ∈ {0, 1}."""
    return (torch.special.entr(p) + torch.special.entr(1.0 - p)).sum(-1)


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
        return cd_loss(
            v, W, b_v, b_h, k=self.k, method=self.method, chains=self.chains, generator=generator
        )

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
class DBM(LayerStack):
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
        sizes = layer_sizes(n_visible, hidden)
        check_positive_int(k, "k")
        check_positive_int(n_chains, "n_chains")
        check_positive_int(mean_field_steps, "mean_field_steps")
        torch_dtype = parse_dtype(dtype)
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

    # ----------------------------------------------------------------- shapes
    @property
    def n_layers(self) -> int:
        """Number of hidden layers ``L``."""
        return len(self.sizes) - 1

    @property
    def _anchor(self) -> Tensor:
        return self.b[0]

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
        (docs/design.md §1); the top layer has no offset; the visible layer is ``visible_mean``."""
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
        return cd_loss(
            pos, W, b_e, b_o, k=self.k, method="pcd", chains=self.chains, generator=generator
        )

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
        check_method(method)
        x = self._data(X)
        L = self.n_layers
        gen = torch.Generator().manual_seed(self._config["seed"] + 7919)
        rbms = [
            _LayerRBM(
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
            for i in range(L)
        ]
        self.pretrain_results_ = train_greedily(
            rbms,
            x,
            lambda x, i: rbms[i].up(x),
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            lr=lr,
            **train_options,
        )
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
        self.fit_result_ = train(
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
    def _chain_from(self, v: Tensor) -> Tensor:
        """Even-layer chain state from data: ``v`` and its mean-field even hidden layers."""
        return self.join(self.mean_field(v), "even")

    @property
    def _chain_width(self) -> int:
        return sum(self.sizes[i] for i in self.even)

    def gibbs(
        self, even: Tensor, steps: int, generator: torch.Generator | None = None
    ) -> GibbsState:
        """``steps`` sweeps of alternating Gibbs (odd layers | even, then even | odd) from the
        even-layer state ``even``: ``core.rbm.gibbs_chain`` on the bipartite RBM. The returned
        state's ``v`` / ``v_mean`` are even-layer rows, ``h_mean`` the odd-layer means."""
        with torch.no_grad():
            W, b_e, b_o = self.bipartite()
            return gibbs_chain(even, W, b_e, b_o, check_positive_int(steps, "steps"), generator)

    def _sweeps(self, x: Tensor, steps: int, generator: torch.Generator | None) -> GibbsState:
        return self.gibbs(x, steps, generator)

    def _read_visible(
        self, state: GibbsState, generator: torch.Generator | None, mean: bool
    ) -> Tensor:
        """The visible layer of the even-layer rows (``E[v | h¹]`` when ``mean``)."""
        return (state.v_mean if mean else state.v)[:, : self.n_visible]

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

        ``"exact"`` enumerates the smaller side of the bipartite RBM (choose it when
        ``core.partition.exact_is_affordable`` holds for the even and odd layer sizes). ``"ais"``
        anneals the odd layers with the even layers summed out (see the module doc)."""
        check_choice(method, "method", ("exact", "ais"))
        with torch.no_grad():
            W, b_e, b_o = self.bipartite()
            if method == "exact":
                log_z = log_partition_exact(W, b_e, b_o)
                return log_z, torch.zeros_like(log_z), "exact"
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

        ``"exact"``: exact (even hidden layers summed by enumeration, at most
        ``core.partition.MAX_ENUMERATED_UNITS`` units; exact ``log Z``).
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
