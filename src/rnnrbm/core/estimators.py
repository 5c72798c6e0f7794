"""Frame estimators: a distribution over one binary frame whose biases may be offset per example.

``RBMFrame`` is the conditional RBM (docs/design.md §1): parameters ``W, b_v, b_h`` (+ ``log_sigma``
for Gaussian visibles) plus optional per-example *offsets* ``(Δb_v (N, n_v), Δb_h (N, n_h))``
from a recurrence. A plain RBM is the case ``offsets=None``. ``NADEFrame`` is the exact, tractable
alternative with the same interface (RNN-NADE).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from rnnrbm.core import partition
from rnnrbm.core.contrastive import GRADIENTS, contrastive_loss, negative_samples
from rnnrbm.core.nade import nade_expected_visible, nade_log_prob, nade_sample
from rnnrbm.core.rbm import GibbsState, free_energy, gibbs_chain, hidden_mean
from rnnrbm.validation import check_choice

__all__ = ["FrameEstimator", "LogProb", "NADEFrame", "Offsets", "RBMFrame"]

Offsets = tuple[Tensor, Tensor] | None


class LogProb(NamedTuple):
    """Per-example log-probabilities (nats), their standard errors (zeros when exact) and how
    they were computed (``"exact"`` or ``"ais(runs=…, betas=…)"``); with AIS also the values
    from half of the runs (``AISResult.log_z_from_half_runs``), the check that AIS converged."""

    value: Tensor
    se: Tensor
    estimator: str
    value_half_runs: Tensor | None = None


class FrameEstimator(Protocol):
    """What a temporal model needs from a per-frame distribution (docs/design.md §3)."""

    n_visible: int

    @property
    def offset_sizes(self) -> tuple[int, ...]: ...

    def loss(
        self, v: Tensor, offsets: Offsets = None, *, generator: torch.Generator | None = None
    ) -> Tensor: ...

    def log_prob(self, v: Tensor, offsets: Offsets = None, method: str = "exact") -> LogProb: ...

    def sample(
        self,
        offsets: Offsets,
        steps: int,
        generator: torch.Generator | None = None,
        clamp: tuple[Tensor, Tensor] | None = None,
        *,
        v0: Tensor | None = None,
    ) -> Tensor: ...

    def expected_visible(
        self,
        offsets: Offsets,
        steps: int = 25,
        generator: torch.Generator | None = None,
        clamp: tuple[Tensor, Tensor] | None = None,
        *,
        v0: Tensor | None = None,
    ) -> Tensor: ...

    def hidden_mean(self, v: Tensor, offsets: Offsets = None) -> Tensor: ...


class _OffsetBiases(nn.Module):
    """The bias plumbing both estimators share: ``b_v (n_v,)``, ``b_h (n_h,)`` plus optional
    per-example offsets ``(Δb_v (N, n_v), Δb_h (N, n_h))`` from a recurrence."""

    n_visible: int
    n_hidden: int
    b_v: nn.Parameter
    b_h: nn.Parameter

    @property
    def offset_sizes(self) -> tuple[int, int]:
        return (self.n_visible, self.n_hidden)

    def biases(self, offsets: Offsets = None) -> tuple[Tensor, Tensor]:
        """Shared biases, or per-example ``b + Δb`` when offsets are given."""
        if offsets is None:
            return self.b_v, self.b_h
        d_v, d_h = offsets
        return self.b_v + d_v, self.b_h + d_h


class RBMFrame(_OffsetBiases):
    """A Bernoulli- or Gaussian-visible RBM whose biases can be offset per example.

    ``W`` is initialised N(0, init_std²) (Hinton 2010 §8), biases at zero, ``log_sigma`` at 0
    (σ = 1, the usual choice after standardising data). ``gradient="direct"``: the CD
    surrogate's gradient written out (``core.contrastive``; Bernoulli visibles) — the same
    gradient up to rounding, fewer operators than autograd's replay.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        visible: Literal["bernoulli", "gaussian"] = "bernoulli",
        k: int = 1,
        gradient: Literal["autograd", "direct"] = "autograd",
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_choice(visible, "visible", ("bernoulli", "gaussian"))
        check_choice(gradient, "gradient", GRADIENTS)
        self.n_visible, self.n_hidden, self.visible, self.k = n_visible, n_hidden, visible, k
        self.gradient = gradient
        dtype = dtype or torch.get_default_dtype()
        w = torch.randn(n_visible, n_hidden, generator=generator, dtype=dtype) * init_std
        self.W = nn.Parameter(w.to(device))
        self.b_v = nn.Parameter(torch.zeros(n_visible, dtype=dtype, device=device))
        self.b_h = nn.Parameter(torch.zeros(n_hidden, dtype=dtype, device=device))
        self.log_sigma = (
            nn.Parameter(torch.zeros(n_visible, dtype=dtype, device=device))
            if visible == "gaussian"
            else None
        )

    def free_energy(self, v: Tensor, offsets: Offsets = None) -> Tensor:
        b_v, b_h = self.biases(offsets)
        return free_energy(v, self.W, b_v, b_h, self.log_sigma)

    def hidden_mean(self, v: Tensor, offsets: Offsets = None) -> Tensor:
        _, b_h = self.biases(offsets)
        return hidden_mean(v, self.W, b_h, self.log_sigma)

    def loss(
        self,
        v: Tensor,
        offsets: Offsets = None,
        *,
        generator: torch.Generator | None = None,
        k: int | None = None,
    ) -> Tensor:
        """CD-k surrogate with chains started at the data (per-example biases allowed)."""
        b_v, b_h = self.biases(offsets)
        v_neg = negative_samples(
            v, self.W, b_v.detach(), b_h.detach(), k or self.k, generator, self.log_sigma
        )
        direct = self.gradient == "direct"
        return contrastive_loss(v, v_neg, self.W, b_v, b_h, self.log_sigma, direct=direct)[0]

    def log_partition(
        self,
        offsets: Offsets = None,
        method: Literal["exact", "ais"] = "exact",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        base_visible_bias: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, str]:
        """``(log Z, s.e., estimator)`` per bias row (float64)."""
        if check_choice(method, "method", ("exact", "ais")) == "ais":
            res = self._ais(offsets, n_runs, n_betas, base_visible_bias, generator)
            return res.log_z, res.log_z_se, f"ais(runs={n_runs}, betas={n_betas})"
        b_v, b_h = self.biases(offsets)
        with torch.no_grad():
            log_z = partition.log_partition_exact(self.W, b_v, b_h, self.log_sigma)
        return log_z, torch.zeros_like(log_z), "exact"

    def _ais(
        self,
        offsets: Offsets,
        n_runs: int,
        n_betas: int,
        base_visible_bias: Tensor | None,
        generator: torch.Generator | None,
        streams: Sequence[tuple[int, int]] | None = None,
    ) -> partition.AISResult:
        b_v, b_h = self.biases(offsets)
        with torch.no_grad():
            return partition.log_partition_ais(
                self.W,
                b_v,
                b_h,
                self.log_sigma,
                n_runs=n_runs,
                n_betas=n_betas,
                base_visible_bias=base_visible_bias,
                generator=generator,
                streams=streams,
            )

    def _raise(
        self,
        v: Tensor,
        offsets: Offsets,
        n_runs: int,
        n_betas: int,
        base_visible_bias: Tensor | None,
        generator: torch.Generator | None,
        streams: Sequence[tuple[int, int]] | None = None,
    ) -> partition.AISResult:
        """Reverse AIS started at each example itself (RAISE, Burda, Grosse & Salakhutdinov
        2015): one RBM row per example, its ``n_runs`` reverse chains all starting at ``v``.

        ``partition.log_partition_reverse_ais`` returns ``log Z_A − log mean exp(−log w)``;
        started at ``v`` instead of at target samples, ``−F(v) −`` that is, run by run,
        ``log w_RAISE = log p_A(v_1) + Σ_{k<K} [log p_k*(v_{k+1}) − log p_k*(v_k)]`` (the
        sum telescopes against the reverse weight), whose mean over runs is an unbiased
        estimate of ``p_ann(v)``: the likelihood of the model that draws ``v_1 ~ p_A`` and runs
        the forward AIS transitions. Its log is a stochastic LOWER bound on ``log p_ann(v)``, and
        ``p_ann → p`` as the β steps grow, so the NLL it gives is conservative."""
        b_v, b_h = self.biases(offsets)
        rows = v.shape[0]
        if b_v.dim() == 1:  # shared biases: still one reverse run set per example
            b_v, b_h = b_v.expand(rows, -1), b_h.expand(rows, -1)
        init = v.detach()[:, None, :].expand(rows, n_runs, self.n_visible)
        with torch.no_grad():
            return partition.log_partition_reverse_ais(
                self.W,
                b_v,
                b_h,
                init,
                self.log_sigma,
                n_betas=n_betas,
                base_visible_bias=base_visible_bias,
                generator=generator,
                streams=streams,
            )

    def log_prob(
        self,
        v: Tensor,
        offsets: Offsets = None,
        method: Literal["exact", "ais", "raise"] = "exact",
        *,
        n_runs: int = 100,
        n_betas: int = 1000,
        base_visible_bias: Tensor | None = None,
        generator: torch.Generator | None = None,
        streams: Sequence[tuple[int, int]] | None = None,
    ) -> LogProb:
        """``log p(v) = −F(v) − log Z`` per example (float64), with the s.e. of log Z (and, by
        AIS, the values from half of the runs). ``"ais"``: forward AIS, which errs HIGH for
        ``log p`` (optimistic); ``"raise"``: reverse AIS from each example (:meth:`_raise`),
        a stochastic lower bound (conservative). Both share the β schedule and the base.
        ``streams`` ``[(examples, seed), …]``: per-block random streams
        (``partition.log_partition_ais``)."""
        with torch.no_grad():
            if streams is None:
                neg_fe = -self.free_energy(v, offsets).double()
            else:  # block by block: a product's rounding depends on how many rows it holds
                neg_fe = -torch.cat(
                    [self.free_energy(v[a:b], _rows(offsets, a, b)) for a, b in _bounds(streams)]
                ).double()
        if method in ("ais", "raise"):
            if method == "ais":
                res = self._ais(offsets, n_runs, n_betas, base_visible_bias, generator, streams)
            else:
                res = self._raise(
                    v, offsets, n_runs, n_betas, base_visible_bias, generator, streams
                )
            value = neg_fe - res.log_z
            how = f"{method}(runs={n_runs}, betas={n_betas})"
            half = neg_fe - res.log_z_from_half_runs()
            return LogProb(value, res.log_z_se.expand_as(value), how, half)
        log_z, se, how = self.log_partition(offsets, method)
        value = neg_fe - log_z
        return LogProb(value, se.expand_as(value), how)

    def _chain(
        self,
        offsets: Offsets,
        steps: int,
        generator: torch.Generator | None,
        clamp: tuple[Tensor, Tensor] | None,
        n: int | None,
        v0: Tensor | None,
    ) -> GibbsState:
        b_v, b_h = self.biases(offsets)
        rows = b_v.shape[0] if b_v.dim() == 2 else n
        if rows is None:
            raise ValueError("sample: pass n when the biases are shared. Fix: sample(n=...)")
        if v0 is None:
            with torch.no_grad():
                shape = (rows, self.n_visible)
                if self.log_sigma is None:  # uniform random bits
                    u = torch.rand(
                        shape, generator=generator, dtype=self.W.dtype, device=b_v.device
                    )
                    v0 = (u < 0.5).to(self.W.dtype)
                else:
                    v0 = b_v.detach().expand(shape).clone()
        return gibbs_chain(v0, self.W, b_v, b_h, steps, generator, self.log_sigma, clamp)

    def sample(
        self,
        offsets: Offsets = None,
        steps: int = 25,
        generator: torch.Generator | None = None,
        clamp: tuple[Tensor, Tensor] | None = None,
        *,
        n: int | None = None,
        v0: Tensor | None = None,
    ) -> Tensor:
        """Visible samples after ``steps`` Gibbs steps: one per offset row, or ``n`` when shared.

        Chains start from ``v0`` or from uniform random bits (Bernoulli) / the bias (Gaussian).
        """
        return self._chain(offsets, steps, generator, clamp, n, v0).v

    def expected_visible(
        self,
        offsets: Offsets = None,
        steps: int = 25,
        generator: torch.Generator | None = None,
        clamp: tuple[Tensor, Tensor] | None = None,
        *,
        n: int | None = None,
        v0: Tensor | None = None,
    ) -> Tensor:
        """``E[v | h]`` at the last step of a ``steps``-step chain: the mean instead of a draw."""
        state = self._chain(offsets, steps, generator, clamp, n, v0)
        if clamp is None:
            return state.v_mean
        return torch.where(clamp[0], clamp[1], state.v_mean)


# ------------------------------------------------------------------------------------- NADEFrame


class NADEFrame(_OffsetBiases):
    """A NADE frame distribution (Larochelle & Murray 2011) whose biases can be offset per example.

    Parameters ``W, V (n_v, n_h)`` (input and output weights, untied), ``b_v (n_v,)``,
    ``b_h (n_h,)``; offsets ``(Δb_v (N, n_v), Δb_h (N, n_h))`` are added to the biases exactly
    as in :class:`RBMFrame`. This is the frame estimator of RNN-NADE (Boulanger-Lewandowski,
    Bengio & Vincent 2012, §4): the RNN emits ``b_v(t)``, ``b_h(t)`` and ``log p(v_t | v_<t)``
    is exact, so training minimises the exact negative log-likelihood (no sampling).

    ``hidden_mean(v, offsets)`` is ``σ(b_h + v W)``: the NADE hidden vector after reading the
    *whole* frame (the pre-activation NADE would use to predict a unit ``n_v + 1``). It is the
    natural analogue of the RBM's ``P(h | v)`` and lets a mean-field (RTRBM-style) recurrence run
    on a NADE frame; it is a summary, not a posterior (NADE hiddens are deterministic).

    ``checkpoint=True`` recomputes the teacher-forced ``(N, n_v, n_h)`` hidden states in the
    backward pass instead of storing them (memory for time; see ``core.nade.nade_logits``).
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        init_std: float = 0.01,
        checkpoint: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.n_visible, self.n_hidden, self.checkpoint = n_visible, n_hidden, checkpoint
        dtype = dtype or torch.get_default_dtype()

        def weights() -> nn.Parameter:
            w = torch.randn(n_visible, n_hidden, generator=generator, dtype=dtype) * init_std
            return nn.Parameter(w.to(device))

        self.W, self.V = weights(), weights()
        self.b_v = nn.Parameter(torch.zeros(n_visible, dtype=dtype, device=device))
        self.b_h = nn.Parameter(torch.zeros(n_hidden, dtype=dtype, device=device))

    def _log_prob(self, v: Tensor, offsets: Offsets) -> Tensor:
        b_v, b_h = self.biases(offsets)
        return nade_log_prob(v, self.W, self.V, b_v, b_h, checkpoint=self.checkpoint)

    def loss(
        self, v: Tensor, offsets: Offsets = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact negative log-likelihood ``−mean_n log p(v_n)`` (nats per frame).

        ``generator`` is accepted for the FrameEstimator protocol and unused (no sampling)."""
        return -self._log_prob(v, offsets).mean()

    def log_prob(
        self,
        v: Tensor,
        offsets: Offsets = None,
        method: Literal["exact", "ais"] = "exact",
        **ais_options: object,
    ) -> LogProb:
        """Exact ``log p(v)`` per example (float64), s.e. zeros, estimator ``"exact"``.

        NADE is normalised, so ``method="ais"`` (and its options) also returns the exact value:
        a sequence model can then be evaluated with one call whatever its frame estimator."""
        check_choice(method, "method", ("exact", "ais"))
        with torch.no_grad():
            value = self._log_prob(v, offsets).double()
        return LogProb(value, torch.zeros_like(value), "exact")

    def hidden_mean(self, v: Tensor, offsets: Offsets = None) -> Tensor:
        """``σ(b_h + v W)``, ``(N, n_h)``: the hidden vector after the whole frame (see class)."""
        _, b_h = self.biases(offsets)
        return hidden_mean(v, self.W, b_h)

    def sample(
        self,
        offsets: Offsets = None,
        steps: int = 0,
        generator: torch.Generator | None = None,
        clamp: tuple[Tensor, Tensor] | None = None,
        *,
        n: int | None = None,
        v0: Tensor | None = None,
    ) -> Tensor:
        """Exact ancestral samples, one per offset row (or ``n`` with shared biases).

        ``steps`` and ``v0`` are accepted for the FrameEstimator protocol and ignored (no chain).
        ``clamp`` is exact only for clamped units that precede the free ones in the unit order
        (see ``core.nade.nade_sample``)."""
        b_v, b_h = self.biases(offsets)
        return nade_sample(self.W, self.V, b_v, b_h, n, generator, clamp)[0]

    def expected_visible(
        self,
        offsets: Offsets = None,
        steps: int = 0,
        generator: torch.Generator | None = None,
        clamp: tuple[Tensor, Tensor] | None = None,
        *,
        n: int | None = None,
        v0: Tensor | None = None,
    ) -> Tensor:
        """Greedy mean-field approximation of ``E[v]`` (``core.nade.nade_expected_visible``);
        clamped units are overwritten with their values afterwards."""
        b_v, b_h = self.biases(offsets)
        p = nade_expected_visible(self.W, self.V, b_v, b_h, n)
        if clamp is None:
            return p
        return torch.where(clamp[0], clamp[1].to(p.dtype), p)


def _bounds(streams: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """``[a, b)`` row bounds of consecutive ``(rows, seed)`` blocks."""
    a = 0
    for n, _ in streams:
        yield a, a + n
        a += n


def _rows(offsets: Offsets, a: int, b: int) -> Offsets:
    return None if offsets is None else (offsets[0][a:b], offsets[1][a:b])
