"""RBM and GaussianBernoulliRBM: the user-facing models around one ``RBMFrame``.

scikit-learn-like surface — ``fit``, ``transform``, ``sample``, ``log_likelihood``, ``save`` /
``load`` — over the shared machinery: ``training.fit`` runs the loop, ``checkpoint`` stores it.
(Those two imports point up the layer stack; they live inside the convenience methods — here
and in ``models.stack.train`` — and are the only exceptions declared in the import-linter
contract.) ``check_method``, ``cd_loss``, ``ais_options`` and ``Checkpointable`` are shared with
the deep stacks (``models.dbn``, ``models.dbm``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

import torch
from torch import Tensor, nn

from rnnrbm.core.contrastive import PersistentChains, contrastive_loss, negative_samples
from rnnrbm.core.estimators import LogProb, RBMFrame
from rnnrbm.core.monitors import (
    free_energy_gap,
    pseudo_log_likelihood,
    reconstruction_cross_entropy,
)
from rnnrbm.core.partition import base_rate_visible_bias
from rnnrbm.registry import register_model
from rnnrbm.validation import (
    InputError,
    as_data_tensor,
    check_binary,
    check_choice,
    check_positive_int,
    error_message,
    parse_dtype,
)

__all__ = ["RBM", "GaussianBernoulliRBM"]

Method = Literal["cd", "pcd"]


def check_method(method: str, name: str = "method") -> None:
    """Raise unless ``method`` is ``"cd"`` or ``"pcd"`` (the RBM's and the deep stacks')."""
    check_choice(method, name, ("cd", "pcd"))


def cd_loss(
    batch: Tensor,
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    *,
    k: int,
    method: Method,
    chains: PersistentChains,
    generator: torch.Generator | None = None,
    log_sigma: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CD-k / PCD-k surrogate for one batch ``(B, n_visible)`` and its training monitor.

    Negatives are ``k`` block-Gibbs steps from the data (CD) or from the persistent ``chains``
    (PCD, Tieleman 2008), drawn without gradient; the loss is ``contrastive_loss`` (mean free
    energy of the data minus that of the negatives), whose gradient is the learning rule."""
    # No ``torch.no_grad()`` scope here: ``gibbs_chain`` draws under its own (~2 µs a step).
    if method == "pcd":
        v_neg = chains.advance(W, b_v, b_h, k, generator, log_sigma, data=batch)
    else:
        v_neg = negative_samples(batch, W, b_v, b_h, k, generator, log_sigma)
    loss, f_pos, _ = contrastive_loss(batch, v_neg, W, b_v, b_h, log_sigma)
    return loss, {"free_energy_data": f_pos.mean()}


def ais_options(
    method: str,
    n_runs: int,
    n_betas: int,
    generator: torch.Generator | None,
    base_visible_bias: Tensor,
) -> dict[str, Any]:
    """Keyword arguments of the frame's ``log_prob`` / ``log_partition`` for ``method``: the AIS
    settings and base-rate model for ``"ais"``, none otherwise."""
    if method != "ais":
        return {}
    return {
        "n_runs": n_runs,
        "n_betas": n_betas,
        "generator": generator,
        "base_visible_bias": base_visible_bias,
    }


class Checkpointable:
    """The registry protocol (``config`` / ``from_config``) and checkpoint I/O of a model whose
    constructor arguments are kept in ``self._config``.

    ``save`` / ``load`` import ``checkpoint`` inside the method: it sits above ``models`` in the
    layer stack (the exception declared in the import-linter contract)."""

    _config: dict[str, Any]

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (lists copied): all ``from_config`` needs."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        return cls(**config)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an atomic safetensors checkpoint (weights, config, persistent chains, AIS base)."""
        from rnnrbm.checkpoint import save_checkpoint

        return save_checkpoint(path, self)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> Self:
        """Load a checkpoint written by ``save`` or by training (no hyper-parameters needed)."""
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


@register_model("rbm")
class RBM(Checkpointable, nn.Module):
    """A Bernoulli–Bernoulli restricted Boltzmann machine trained by CD-k or PCD-k.

    Parameters
    ----------
    n_visible, n_hidden : layer sizes.
    k : Gibbs steps per update (CD-k / PCD-k).
    method : ``"pcd"`` (persistent chains, Tieleman 2008) or ``"cd"`` (chains start at the data).
    n_chains : number of persistent chains, independent of the batch size.
    init_std : standard deviation of the initial weights.
    seed : seeds the initial weights (training randomness is seeded by ``fit(seed=...)``).
    """

    model_type = "rbm"
    visible: Literal["bernoulli", "gaussian"] = "bernoulli"

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        k: int = 1,
        method: Method = "pcd",
        n_chains: int = 100,
        init_std: float = 0.01,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(n_visible, "n_visible")
        check_positive_int(n_hidden, "n_hidden")
        check_positive_int(k, "k")
        check_positive_int(n_chains, "n_chains")
        check_method(method)
        torch_dtype = parse_dtype(dtype)
        self._config = {
            "n_visible": n_visible,
            "n_hidden": n_hidden,
            "k": k,
            "method": method,
            "n_chains": n_chains,
            "init_std": init_std,
            "seed": seed,
            "dtype": dtype,
        }
        self.k, self.method = k, method
        gen = torch.Generator().manual_seed(seed)
        self.frame = RBMFrame(
            n_visible,
            n_hidden,
            visible=self.visible,
            k=k,
            init_std=init_std,
            generator=gen,
            dtype=torch_dtype,
            device=device,
        )
        self.chains = PersistentChains(n_chains, n_visible, dtype=torch_dtype, device=device)
        # Base-rate visible biases for AIS (Salakhutdinov & Murray 2008 §4.2), set by fit().
        self.register_buffer("base_visible_bias", torch.zeros(n_visible, dtype=torch_dtype))
        self._gap_reference: Tensor | None = None

    # ----------------------------------------------------------------- shapes
    @property
    def n_visible(self) -> int:
        return self.frame.n_visible

    @property
    def n_hidden(self) -> int:
        return self.frame.n_hidden

    @property
    def device(self) -> torch.device:
        return self.frame.W.device

    def _check(self, x: Any, name: str = "X") -> Tensor:
        t = as_data_tensor(
            x, name, n_features=self.n_visible, dtype=self.frame.W.dtype, device=self.device
        )
        if self.visible == "bernoulli":
            check_binary(t, name)
        return t

    # ----------------------------------------------------------------- training
    def loss(
        self, batch: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """CD-k / PCD-k surrogate for one batch (its gradient is the learning rule)."""
        f = self.frame
        return cd_loss(
            batch,
            f.W,
            f.b_v,
            f.b_h,
            k=self.k,
            method=self.method,
            chains=self.chains,
            generator=generator,
            log_sigma=f.log_sigma,
        )

    def on_fit_start(self, train: Any, resumed: bool = False) -> None:
        """Hinton (2010 §8): start visible biases at the log-odds of the data marginals."""
        data = getattr(train, "data", None)
        if data is None:
            return
        self._gap_reference = data
        if resumed:
            return
        with torch.no_grad():
            base = base_rate_visible_bias(data) if self.visible == "bernoulli" else data.mean(0)
            self.base_visible_bias.copy_(base)
            self.frame.b_v.copy_(base)
            if self.visible == "gaussian":
                self.frame.log_sigma.copy_(data.std(0).clamp_min(1e-3).log())  # type: ignore[union-attr]

    def validate(self, valid: Tensor) -> dict[str, float]:
        """Monitors on held-out rows (nats per example)."""
        f = self.frame
        with torch.no_grad():
            out = {
                "recon_xent" if self.visible == "bernoulli" else "recon_sq_error": float(
                    reconstruction_cross_entropy(valid, f.W, f.b_v, f.b_h, f.log_sigma).mean()
                )
            }
            if self.visible == "bernoulli":
                out["neg_pseudo_loglik"] = -float(
                    pseudo_log_likelihood(valid, f.W, f.b_v, f.b_h).mean()
                )
            if self._gap_reference is not None:
                ref = self._gap_reference[: valid.shape[0]]
                out["free_energy_gap"] = float(
                    free_energy_gap(ref, valid, f.W, f.b_v, f.b_h, f.log_sigma)
                )
        return out

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
        valid: Any = None,
        callbacks: tuple[Any, ...] = (),
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: str | os.PathLike[str] | None = None,
        progress: bool = False,
        **train_options: Any,
    ) -> RBM:
        """Train on the rows of ``X`` through the shared ``training.fit`` loop; returns self."""
        from rnnrbm.training import RowBatches, TrainConfig
        from rnnrbm.training import fit as train_loop

        data = self._check(X, "X")
        valid_t = self._check(valid, "valid") if valid is not None else None
        config = TrainConfig(
            epochs=epochs,
            batch_size=check_positive_int(batch_size, "batch_size"),
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
            checkpoint_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
            progress=progress,
            **train_options,
        )
        self.fit_result_ = train_loop(
            self,
            RowBatches(data, config.batch_size, seed=seed),
            valid_t,
            config,
            callbacks,
            resume=resume,
        )
        return self

    # ----------------------------------------------------------------- inference
    def transform(self, X: Any) -> Tensor:
        """Hidden-unit probabilities ``P(h = 1 | v)``, ``(N, n_hidden)``."""
        v = as_data_tensor(
            X, "X", n_features=self.n_visible, dtype=self.frame.W.dtype, device=self.device
        )
        with torch.no_grad():
            return self.frame.hidden_mean(v)

    def sample(
        self,
        n: int,
        steps: int = 1000,
        generator: torch.Generator | None = None,
        *,
        start: Any = None,
    ) -> Tensor:
        """``n`` visible samples after ``steps`` Gibbs steps from random bits (or ``start``)."""
        check_positive_int(n, "n")
        v0 = self._check(start, "start") if start is not None else None
        with torch.no_grad():
            return self.frame.sample(
                None, check_positive_int(steps, "steps"), generator, n=n, v0=v0
            )

    def log_likelihood(
        self,
        X: Any,
        method: Literal["exact", "ais"] = "exact",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        generator: torch.Generator | None = None,
    ) -> LogProb:
        """Per-row ``log p(x)`` in nats: ``"exact"`` (choose it when
        ``core.partition.exact_is_affordable`` holds) or ``"ais"`` ± s.e."""
        v = self._check(X, "X")
        options = ais_options(method, n_runs, n_betas, generator, self.base_visible_bias)
        return self.frame.log_prob(v, None, method, **options)


@register_model("gaussian-rbm")
class GaussianBernoulliRBM(RBM):
    """Gaussian visible units with learned per-unit σ (log-parametrised), Bernoulli hiddens.

    Energy ``Σ (v−b)²/2σ² − h·c − (v/σ)ᵀ W h`` (Hinton 2010 §13.2). ``fit`` starts ``b`` at the
    data mean and ``σ`` at the data standard deviation; a small ``lr`` (≈1e-3) is advisable.
    """

    model_type = "gaussian-rbm"
    visible = "gaussian"
