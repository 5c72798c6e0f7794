"""Partition functions of (conditional) RBMs: exact enumeration and annealed importance sampling.

``log Z`` is what turns a free energy into a log-likelihood: ``log p(v) = −F(v) − log Z``. Every
function takes the weights ``W (n_v, n_h)`` shared by ``R`` RBMs whose biases are either shared
``(n,)`` or per RBM ``(R, n)`` (one bias row per frame of a temporal model), like ``core.rbm``.
Visible units are Bernoulli when ``log_sigma is None``, else Gaussian with ``σ = exp(log_sigma)``.

* ``log_partition_exact`` enumerates the smaller layer (always the hiddens for Gaussian visibles,
  whose integral is analytic) in chunks and sums in float64 with logsumexp. It accepts up to
  ``MAX_ENUMERATED_UNITS`` = 25 enumerated units; ``exact_is_affordable`` is the one rule by
  which every ``method="auto"`` chooses it over AIS (≤ 20 units and ``rows × 2^units ≤ 2^28``).
* ``log_partition_ais`` is annealed importance sampling (Neal 2001) between a base-rate RBM ``A``
  (``W = 0``) and the target ``B`` (Salakhutdinov & Murray 2008, "On the quantitative analysis of
  deep belief networks", §4). It is unbiased for ``Z`` and so underestimates ``log Z`` on average.
* ``log_partition_reverse_ais`` runs the same chain from exact samples of ``B`` back to ``A``
  (Burda, Grosse & Salakhutdinov 2015, AISTATS): unbiased for ``1/Z``, so it overestimates
  ``log Z`` on average. Together the two bracket the truth.

The annealing path (for each RBM, with its own biases): for ``0 = β_0 < β_1 < … < β_K = 1``

    Bernoulli: p_k*(v) = exp((1−β_k) v·b_A + β_k v·b_v) · Π_j (1 + exp(β_k x_j)),  x = vW + b_h
    Gaussian:  p_k*(v) = exp(−[(1−β_k)(v−b_A)² + β_k (v−b_v)²] / 2σ²) · Π_j (1 + exp(β_k x_j)),
               x = (v/σ)W + b_h

``p_0*`` is the base model (``Z_A = Π_i (1 + e^{b_A,i}) · 2^{n_h}``, or ``Π_i σ_i √(2π) · 2^{n_h}``)
and ``p_K*`` the target. Each ``p_k*`` is the visible marginal of an RBM with weights ``β_k W``,
hidden bias ``β_k b_h`` and visible bias ``(1−β_k) b_A + β_k b_v``, so the transition ``T_k`` is
one block-Gibbs sweep of that RBM: ``h ~ σ(β_k x)``, then ``v ~ σ((1−β_k) b_A + β_k (W h + b_v))``
(Gaussian: ``v ~ N((1−β_k) b_A + β_k b_v + β_k σ ⊙ W h, σ²)``, from completing the square).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnrbm.core.rbm import free_energy, free_energy_hidden, sfc64
from rnnrbm.validation import InputError, InputTypeError, check_binary, error_message

__all__ = [
    "MAX_ENUMERATED_UNITS",
    "AISResult",
    "all_binary_states",
    "base_rate_visible_bias",
    "default_betas",
    "exact_is_affordable",
    "log_partition_ais",
    "log_partition_exact",
    "log_partition_reverse_ais",
]

MAX_ENUMERATED_UNITS = 25  # 2^25 ≈ 3.4e7 states per bias row: seconds, not hours
AFFORDABLE_UNITS = 20  # "auto" enumerates a layer of ≤ 20 units …
AFFORDABLE_WORK = 2**28  # … when bias rows × 2^units stays within this (seconds on a CPU)
_LN2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_softplus = torch._C._nn.softplus  # the out= variant of F.softplus(x, beta, threshold)


# ----------------------------------------------------------------------------- enumeration


def all_binary_states(
    n: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """Rows ``start … stop−1`` of ``{0, 1}^n`` in lexicographic order (column 0 is the most
    significant bit), shape ``(stop − start, n)``. ``stop`` defaults to ``2**n``; slicing lets a
    caller walk ``2**n`` states in chunks without materialising them all."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 62:
        raise InputError(error_message("n", "an int in [0, 62]", repr(n), "pass a small int"))
    total = 1 << n
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise InputError(
            error_message(
                "start/stop",
                f"0 ≤ start ≤ stop ≤ 2**n = {total}",
                f"start={start}, stop={stop}",
                "slice inside the state range",
            )
        )
    idx = torch.arange(start, stop, dtype=torch.int64, device=device)
    shifts = torch.arange(n - 1, -1, -1, dtype=torch.int64, device=device)
    return ((idx[:, None] >> shifts) & 1).to(dtype)


def exact_is_affordable(
    n_visible: int, n_hidden: int, rows: int = 1, *, gaussian: bool = False
) -> bool:
    """Whether ``method="auto"`` computes ``log Z`` exactly rather than by AIS.

    True when the enumerated layer — the smaller one, or the hiddens for ``gaussian`` visibles —
    has at most 20 units and ``rows × 2^units ≤ 2^28``; ``rows`` is the number of bias rows
    (frames of a temporal model, each with its own ``log Z``; 1 for a plain RBM, whose one
    ``log Z`` serves every row). Then ``log_partition_exact`` takes seconds on a CPU.
    """
    units = n_hidden if gaussian else min(n_visible, n_hidden)
    return units <= AFFORDABLE_UNITS and rows * 2**units <= AFFORDABLE_WORK


def log_partition_exact(
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None = None,
    *,
    chunk_size: int = 2**16,
) -> Tensor:
    """Exact ``log Z`` by enumerating the smaller layer; float64, shape ``()`` or ``(R,)``.

    Bernoulli visibles: ``log Z = logsumexp_v −F(v)`` (``core.rbm.free_energy``) when
    ``n_v ≤ n_h``, else ``logsumexp_h −F(h)`` (``free_energy_hidden``). Gaussian visibles: always
    the hiddens, with ``v`` integrated analytically. Free energies are computed in float64 and
    accumulated chunk by chunk with logsumexp; ``chunk_size`` bounds the number of
    (bias row, state) pairs evaluated at once. Differentiable: autograd through it gives the
    model expectations (``∂ log Z / ∂b_v = E[v]``), so exact log-likelihood gradients need no
    hand-written negative phase. Above ``MAX_ENUMERATED_UNITS`` enumerated units this raises
    ``InputError``: use ``log_partition_ais``.
    """
    R, batched = _check_rbm(W, b_v, b_h, log_sigma, "log_partition_exact")
    n_v, n_h = W.shape
    enumerate_hidden = log_sigma is not None or n_h <= n_v
    n = n_h if enumerate_hidden else n_v
    if n > MAX_ENUMERATED_UNITS:
        layer = "n_hidden" if enumerate_hidden else "n_visible"
        why = (
            " (Gaussian visibles: the hidden layer is enumerated)" if log_sigma is not None else ""
        )
        raise InputError(
            error_message(
                f"log_partition_exact({layer}={n})",
                f"at most {MAX_ENUMERATED_UNITS} units in the enumerated (smaller) layer{why}",
                f"n_visible={n_v}, n_hidden={n_h}",
                "use log_partition_ais (or log_partition_reverse_ais) for larger models",
            )
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(
            error_message("chunk_size", "an int ≥ 1", repr(chunk_size), "pass e.g. 2**16")
        )
    f64 = torch.float64
    W64 = W.to(f64)
    # (R, 1, n) biases broadcast against a chunk of states (c, n) to give (R, c) free energies.
    bv = b_v.to(f64).reshape(-1, 1, n_v)
    bh = b_h.to(f64).reshape(-1, 1, n_h)
    ls = None if log_sigma is None else log_sigma.to(f64)
    step = max(1, chunk_size // R)
    log_z = torch.full((R,), -math.inf, dtype=f64, device=W.device)
    for start in range(0, 1 << n, step):  # differentiable: autograd gives ∂log Z = E_model[…]
        states = all_binary_states(
            n, dtype=f64, device=W.device, start=start, stop=min(start + step, 1 << n)
        )
        if enumerate_hidden:
            neg_f = -free_energy_hidden(states, W64, bv, bh, ls)
        else:
            neg_f = -free_energy(states, W64, bv, bh)
        log_z = torch.logaddexp(log_z, torch.logsumexp(neg_f.reshape(R, -1), dim=1))
    return log_z if batched else log_z[0]


# ----------------------------------------------------------------------------- AIS


class AISResult(NamedTuple):
    """An AIS estimate for ``R`` RBMs (``R = 1`` when no bias is batched).

    ``log_z (R,)`` float64 estimate of ``log Z``; ``log_z_se (R,)`` its standard error by the
    delta method on the importance weights, ``std(w) / (√M · mean(w))`` (NaN when ``M = 1``);
    ``log_weights (R, M)`` float64, each run's ``log w = Σ_k log p_k*(v_k) − log p_{k−1}*(v_k)``
    (an estimate of ``log Z − log Z_A`` in both directions: forward ``log_z = base_log_z +
    log mean exp(log w)``, reverse ``log_z = base_log_z − log mean exp(−log w)``);
    ``n_betas`` annealing steps ``K``; ``n_runs`` runs ``M``; ``base_log_z (R,)`` exact
    ``log Z_A`` of the base-rate model; ``reverse`` which direction ran."""

    log_z: Tensor
    log_z_se: Tensor
    log_weights: Tensor
    n_betas: int
    n_runs: int
    base_log_z: Tensor
    reverse: bool = False
    half_runs_log_z: Tensor | None = None  # precomputed block by block (``streams``)

    def log_z_from_half_runs(self) -> Tensor:
        """``log Z`` from each half of the runs, averaged over the two halves ``(R,)``.

        The s.e. does not show AIS's bias (a log-mean-exp of ``M`` weights errs low by ~c/M), so
        ``log_z − log_z_from_half_runs()`` — how far the estimate moved when the runs doubled —
        is the check that it has converged (≈ 0), and a first-order guess of the bias left."""
        if self.half_runs_log_z is not None:
            return self.half_runs_log_z
        half = self.n_runs // 2
        log_w = self.log_weights[:, : 2 * half].reshape(-1, 2, half)
        lme = torch.logsumexp(-log_w if self.reverse else log_w, -1) - math.log(half)
        return self.base_log_z + (-lme if self.reverse else lme).mean(-1)


def default_betas(n_betas: int) -> Tensor:
    """The Salakhutdinov & Murray (2008) schedule scaled to ``n_betas`` steps; float64
    ``(n_betas + 1,)`` from ``β_0 = 0`` to ``β_K = 1``, strictly increasing.

    Three uniform pieces in the paper's proportions 1,000 : 4,000 : 10,000 — ``[0, 0.5]``,
    ``[0.5, 0.9]`` and ``[0.9, 1]`` — so the steps are finest near ``β = 1`` where the
    intermediate distributions change fastest. ``n_betas = 1000`` gives 69, 276 and 655 steps
    (``Δβ`` = 7.2e-3, 1.4e-3, 1.5e-4). Fewer than 3 steps: uniform.
    """
    K = _positive_int(n_betas, "n_betas")
    if K < 3:
        return torch.linspace(0.0, 1.0, K + 1, dtype=torch.float64)
    n1 = max(1, round(K * 1000 / 14500))
    n2 = max(1, round(K * 4000 / 14500))
    n3 = K - n1 - n2
    if n3 < 1:  # only for tiny K
        n2 -= 1 - n3
        n3 = 1
    f64 = torch.float64
    return torch.cat(
        [
            torch.linspace(0.0, 0.5, n1 + 1, dtype=f64)[:-1],
            torch.linspace(0.5, 0.9, n2 + 1, dtype=f64)[:-1],
            torch.linspace(0.9, 1.0, n3 + 1, dtype=f64),
        ]
    )


def base_rate_visible_bias(data: Tensor, *, eps: float = 1.0, gaussian: bool = False) -> Tensor:
    """Visible bias of the base-rate model ``A`` from training data ``(N, n_v)``; ``(n_v,)``.

    Bernoulli: the log-odds of the smoothed marginals ``p_i = (Σ_n v_ni + eps) / (N + 2·eps)``
    (``eps`` is a pseudo-count added to the ones and the zeros of every unit; 1 = Laplace), so a
    unit that is never on gets a finite bias (Salakhutdinov & Murray 2008 §4.2: a base model that
    matches the data marginals makes the first intermediate distributions close to the target).
    ``gaussian=True``: the data mean (the base model is ``N(mean, σ²)``). The result is a
    starting point for AIS only; its value does not change what AIS estimates.
    """
    if not isinstance(data, Tensor):
        raise InputTypeError(
            error_message("data", "a torch.Tensor (N, n_visible)", type(data).__name__, "convert")
        )
    if data.dim() != 2 or data.shape[0] == 0:
        raise InputError(
            error_message("data", "a non-empty (N, n_visible) tensor", _shape(data), "reshape it")
        )
    x = data.detach().to(torch.float64)
    if gaussian:
        return x.mean(0).to(_float_dtype(data))
    if not isinstance(eps, int | float) or eps <= 0:
        raise InputError(error_message("eps", "a positive pseudo-count", repr(eps), "pass 1.0"))
    if bool(((x < 0) | (x > 1)).any()):
        raise InputError(
            error_message(
                "data",
                "values in [0, 1] for Bernoulli visible units",
                f"range [{float(x.min()):g}, {float(x.max()):g}]",
                "binarise the data or pass gaussian=True",
            )
        )
    p = (x.sum(0) + eps) / (x.shape[0] + 2.0 * eps)
    return torch.logit(p).to(_float_dtype(data))


def log_partition_ais(
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None = None,
    *,
    n_runs: int = 100,
    n_betas: int = 1000,
    betas: Tensor | None = None,
    base_visible_bias: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_rows: int | None = None,
    streams: Sequence[tuple[int, int]] | None = None,
) -> AISResult:
    """Forward AIS estimate of ``log Z`` for ``R`` RBMs sharing ``W`` (see the module docstring).

    ``M = n_runs`` chains per RBM start from exact samples of the base model ``A`` (visible bias
    ``base_visible_bias`` ``(n_v,)`` or ``(R, n_v)``, default 0, e.g. ``base_rate_visible_bias``)
    and anneal through ``betas`` (default ``default_betas(n_betas)``; else 1-D, ``0 → 1``,
    strictly increasing). With ``log w = Σ_{k=1..K} log p_k*(v_k) − log p_{k−1}*(v_k)``,
    ``v_1 ~ p_A`` and ``v_{k+1} ~ T_k(· | v_k)``, ``E[w] = Z / Z_A``: unbiased for ``Z``, so
    ``log_z`` is biased low (Jensen) and the s.e. understates the error when the runs miss modes.

    All ``R·M`` chains form one ``(R·M, n_v)`` state: per β step one GEMM to the hidden
    pre-activations ``x`` (used both for the weight increment and for sampling ``h``) and one GEMM
    back. ``chunk_rows`` rows are processed at a time (default: ~3 MiB of buffers on CPU so a
    chunk stays in cache, ~256 MiB on GPU); on CPU the chunks are shared among
    ``torch.get_num_threads()`` worker threads that run single-threaded ops (the process-wide
    thread setting is restored on return). Runs in ``W``'s dtype with log weights in float64.
    Every chunk has its own generator seeded from ``generator``: results are reproducible for the
    same seed, ``chunk_rows`` and device, whatever the thread count.

    ``streams`` ``[(rbms, seed), …]`` instead splits the ``R`` RBMs into consecutive blocks
    (the ``rbms`` sum to ``R``): each block's ``rbms × M`` chains are one chunk with its own
    generator seeded with ``seed`` (``generator`` and ``chunk_rows`` are then unused), so an
    RBM's estimate depends only on its block's seed and content, not on what else is in the
    call — the caller can split the work across calls or processes without changing a number.
    """
    n_runs = _positive_int(n_runs, "n_runs")
    return _ais(
        W, b_v, b_h, log_sigma, None, n_runs, n_betas, betas, base_visible_bias, generator,
        chunk_rows, streams, "log_partition_ais",
    )  # fmt: skip


def log_partition_reverse_ais(
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    init_visible: Tensor,
    log_sigma: Tensor | None = None,
    *,
    n_betas: int = 1000,
    betas: Tensor | None = None,
    base_visible_bias: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_rows: int | None = None,
    streams: Sequence[tuple[int, int]] | None = None,
) -> AISResult:
    """Reverse AIS (Burda, Grosse & Salakhutdinov 2015): anneal from ``β = 1`` down to 0.

    ``init_visible`` ``(M, n_v)`` (shared by every RBM) or ``(R, M, n_v)`` must be samples of the
    target RBM (exact, or from a long Gibbs chain); ``M`` is the number of runs. Derivation
    (indices as in ``log_partition_ais``): the reverse proposal is
    ``r(v_1…v_K) = p_K(v_K) Π_{k<K} T̃_k(v_k | v_{k+1})`` where the reversal ``T̃_k`` of a block
    Gibbs sweep w.r.t. ``p_k`` is the same sweep (detailed balance). Dividing by the forward
    proposal ``q = p_0(v_1) Π_{k<K} T_k(v_{k+1} | v_k)`` and using
    ``T_k(v'|v) p_k(v) = T_k(v|v') p_k(v')`` gives ``q / r = (Z_K / Z_0) / w`` with the SAME
    ``w = Π_{k=1..K} p_k*(v_k) / p_{k−1}*(v_k)`` as the forward estimator, evaluated along the
    reverse path. Hence ``E_r[1 / w] = Z_A / Z``: ``log_z = base_log_z − log mean exp(−log w)``,
    unbiased for ``1/Z`` and biased HIGH for ``log Z``. In the loop, at step ``k = K … 1`` the
    state is ``v_k``: add ``log p_k*(v_k) − log p_{k−1}*(v_k)``, then draw ``v_{k−1}`` with one
    sweep at ``β_{k−1}`` (which reuses the same pre-activation ``x = v_k W + b_h``).
    ``streams`` as in :func:`log_partition_ais`.
    """
    return _ais(
        W, b_v, b_h, log_sigma, init_visible, None, n_betas, betas, base_visible_bias,
        generator, chunk_rows, streams, "log_partition_reverse_ais",
    )  # fmt: skip


# ----------------------------------------------------------------------------- AIS internals


class _Prepared(NamedTuple):
    W_up: Tensor  # (n_v, n_h): v ↦ hidden pre-activation (W/σ for Gaussian visibles)
    W_down: Tensor  # (n_h, n_v): h ↦ visible input (σ ⊙ W)ᵀ for Gaussian visibles
    b_v: Tensor  # (R, n_v)
    b_h: Tensor  # (R, n_h)
    b_a: Tensor  # (R, n_v) base-model visible bias (Gaussian: base mean)
    sigma: Tensor | None  # (n_v,)
    threshold: float  # softplus(x) = x above this (exact to the dtype's precision)


@torch.no_grad()
def _ais(
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None,
    init_visible: Tensor | None,
    n_runs: int | None,
    n_betas: int,
    betas: Tensor | None,
    base_visible_bias: Tensor | None,
    generator: torch.Generator | None,
    chunk_rows: int | None,
    streams: Sequence[tuple[int, int]] | None,
    fn: str,
) -> AISResult:
    R, _ = _check_rbm(W, b_v, b_h, log_sigma, fn)
    n_v, n_h = W.shape
    dtype, device = _float_dtype(W), W.device
    beta_list = _check_betas(betas, n_betas)
    K = len(beta_list) - 1
    b_a = _check_base(base_visible_bias, R, n_v, dtype, device)
    prep = _prepare(W.detach().to(dtype), b_v, b_h, log_sigma, b_a, R, dtype)
    reverse = init_visible is not None
    if reverse:
        init, M = _check_init(init_visible, R, n_v, log_sigma is None, dtype, device)
        # Reverse: at β_k add the increment, then move with a sweep at β_{k−1} (none after k = 1).
        schedule = [
            (beta_list[k], beta_list[k - 1], beta_list[k - 1] if k > 1 else None)
            for k in range(K, 0, -1)
        ]
    else:
        init, M = None, int(n_runs)  # type: ignore[arg-type]
        # Forward: at β_k add the increment, then move with a sweep at β_k (none after k = K).
        schedule = [
            (beta_list[k], beta_list[k - 1], beta_list[k] if k < K else None)
            for k in range(1, K + 1)
        ]
    rows_total = R * M
    if streams is not None:
        starts, stops, seeds = _stream_chunks(streams, R, M)
    else:
        starts, stops, seeds = _seeded_chunks(
            rows_total, chunk_rows, n_v, n_h, dtype, device, generator
        )
    log_w = torch.empty(rows_total, dtype=torch.float64, device=device)
    # With streams every per-RBM reduction is also taken block by block: torch rounds a row's
    # sum differently depending on how many rows come with it.
    blockwise = torch.empty(4, R, dtype=torch.float64, device=device) if streams else None

    def run(i: int) -> None:
        start, stop = starts[i], stops[i]
        gen = torch.Generator(device=device).manual_seed(seeds[i])
        noise = _Noise(stop - start, n_v, n_h, log_sigma is None, dtype, device, gen)
        rbm = torch.arange(start, stop, device=device) // M  # row r·M + m belongs to RBM r
        v0 = None if init is None else init[start:stop]
        log_w[start:stop] = _anneal_chunk(prep, rbm, v0, schedule, noise)
        if blockwise is not None:
            a, b = start // M, stop // M
            part = prep._replace(b_a=prep.b_a[a:b])
            res = _estimate(
                log_w[start:stop].reshape(b - a, M), _base_log_z(part, n_h), K, M, reverse
            )
            blockwise[:, a:b] = torch.stack(
                [res.log_z, res.log_z_se, res.base_log_z, res.log_z_from_half_runs()]
            )

    chunks = range(len(starts))
    if device.type == "cpu":  # chunks, not ops, are spread over torch.get_num_threads() threads
        workers = min(torch.get_num_threads(), len(starts))
        with _single_threaded_ops():
            if workers > 1:
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(run, chunks))  # list() re-raises a worker's exception
            else:
                for i in chunks:
                    run(i)
    else:
        for i in chunks:
            run(i)
    if blockwise is not None:
        log_z, se, base, half = blockwise.unbind(0)
        return AISResult(log_z, se, log_w.reshape(R, M), K, M, base, reverse, half)
    return _estimate(log_w.reshape(R, M), _base_log_z(prep, n_h), K, M, reverse)


def _seeded_chunks(
    rows_total: int,
    chunk_rows: int | None,
    n_v: int,
    n_h: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> tuple[list[int], list[int], list[int]]:
    """Chunks of ``chunk_rows`` rows, each with a seed drawn from ``generator``."""
    if chunk_rows is None:
        bytes_per_row = (6 * n_h + 8 * n_v) * (8 if dtype == torch.float64 else 4)
        # CPU: ~3 MiB per chunk stays in cache (measured: 512 rows of 88×150 beat 256 and 1024);
        # GPU: ~256 MiB so each kernel launch does enough work.
        budget = 2**28 if device.type == "cuda" else 3 * 2**20
        chunk_rows = max(32, budget // bytes_per_row)
    chunk_rows = _positive_int(chunk_rows, "chunk_rows")
    starts = list(range(0, rows_total, chunk_rows))
    stops = [min(s + chunk_rows, rows_total) for s in starts]
    # One generator per chunk, seeded from the caller's: the result depends on the seed and
    # chunk_rows only, not on which thread ran which chunk.
    seeds = torch.randint(
        0,
        2**62,
        (len(starts),),
        generator=generator,
        device=generator.device if generator else "cpu",
    ).tolist()
    return starts, stops, seeds


def _stream_chunks(
    streams: Sequence[tuple[int, int]], R: int, M: int
) -> tuple[list[int], list[int], list[int]]:
    """One chunk per ``(rbms, seed)`` block: rows ``[Σ previous rbms · M, … + rbms · M)``."""
    sizes = [_positive_int(n, "streams: rbms per block") for n, _ in streams]
    if sum(sizes) != R:
        raise InputError(
            error_message("streams", f"blocks whose RBM counts sum to {R}", str(sum(sizes)),
                          "give every RBM exactly one block")
        )  # fmt: skip
    bounds = np.cumsum([0, *sizes]) * M
    return bounds[:-1].tolist(), bounds[1:].tolist(), [int(s) for _, s in streams]


def _estimate(log_w: Tensor, base_log_z: Tensor, K: int, M: int, reverse: bool) -> AISResult:
    if reverse:  # E[1/w] = Z_A / Z
        lme, se = _log_mean_exp_se(-log_w)
        return AISResult(base_log_z - lme, se, log_w, K, M, base_log_z, reverse=True)
    lme, se = _log_mean_exp_se(log_w)  # E[w] = Z / Z_A
    return AISResult(base_log_z + lme, se, log_w, K, M, base_log_z)


def _anneal_chunk(
    p: _Prepared,
    rbm: Tensor,
    v0: Tensor | None,
    schedule: list[tuple[float, float, float | None]],
    noise: _Noise,
) -> Tensor:
    """Run one chunk of chains (``rbm[i]`` = the RBM of row ``i``) through ``schedule``.

    Each entry ``(β_hi, β_lo, β_move)`` adds ``log p_hi*(v) − log p_lo*(v)`` to the log weights
    and then, unless ``β_move`` is None, replaces ``v`` by one Gibbs sweep at ``β_move``. All
    buffers are allocated once and updated in place: per step this is ~20 tensor ops, two GEMMs.
    """
    C, (n_v, n_h) = len(rbm), p.W_up.shape
    dtype, device = p.W_up.dtype, p.W_up.device
    b_h, b_v, b_a = p.b_h[rbm], p.b_v[rbm], p.b_a[rbm]
    half = torch.tensor(0.5, dtype=dtype, device=device)
    if v0 is None:  # exact sample of the base model
        noise.draw()
        if p.sigma is None:
            v = torch.lt(noise.uniform_v(half), torch.sigmoid(b_a)).to(dtype)
        else:
            v = torch.addcmul(b_a, noise.normal_v, p.sigma)
    else:
        v = v0.to(dtype).clone()
    x, sp, sp2, h = (torch.empty(C, n_h, dtype=dtype, device=device) for _ in range(4))
    pre = torch.empty(C, n_v, dtype=dtype, device=device)
    s = torch.empty(C, dtype=dtype, device=device)
    moved = torch.zeros(C, n_v, dtype=dtype, device=device)  # Σ_k Δβ_k v_k (linear term)
    log_w = torch.zeros(C, dtype=torch.float64, device=device)
    for b_hi, b_lo, b_move in schedule:
        torch.addmm(b_h, v, p.W_up, out=x)
        # Σ_j softplus(β_hi x_j) − softplus(β_lo x_j), differenced per unit before the sum so
        # the float32 cancellation error stays at ~1 ulp of one unit's term.
        _softplus(x, b_hi, p.threshold, out=sp)  # softplus(β_hi x) / β_hi
        if b_lo > 0:
            _softplus(x, b_lo, p.threshold, out=sp2)
            sp.sub_(sp2, alpha=b_lo / b_hi)
            torch.sum(sp, -1, out=s)
            log_w.add_(s, alpha=b_hi)
        else:  # softplus(0 · x) = log 2 for every hidden unit
            torch.sum(sp, -1, out=s)
            log_w.add_(s, alpha=b_hi).sub_(n_h * _LN2)
        # The visible terms are linear in v: accumulate Σ Δβ_k v_k and dot it with the biases once.
        moved.add_(v, alpha=b_hi - b_lo)
        if b_move is None:
            continue
        noise.draw()
        torch.mul(x, b_move, out=sp2)
        torch.sigmoid(sp2, out=sp2)
        torch.lt(noise.uniform_h(half), sp2, out=h)
        torch.lerp(b_a, b_v, b_move, out=pre)
        pre.addmm_(h, p.W_down, alpha=b_move)
        if p.sigma is None:
            torch.sigmoid(pre, out=pre)
            torch.lt(noise.uniform_v(half), pre, out=v)
        else:
            torch.addcmul(pre, noise.normal_v, p.sigma, out=v)
    return log_w + _linear_term(p, moved, b_v, b_a, schedule)


def _linear_term(
    p: _Prepared,
    moved: Tensor,
    b_v: Tensor,
    b_a: Tensor,
    schedule: list[tuple[float, float, float | None]],
) -> Tensor:
    """``Σ_k log p_k*(v_k) − log p_{k−1}*(v_k)`` restricted to the visible (bias) terms.

    Bernoulli: ``Δβ_k v_k · (b_v − b_A)``. Gaussian: ``−Δβ_k [(v−b_v)² − (v−b_A)²] / 2σ²
    = Δβ_k (v_k − (b_v + b_A)/2) · (b_v − b_A) / σ²``. Summed over k with ``moved = Σ Δβ_k v_k``.
    """
    f64 = torch.float64
    d = (b_v - b_a).to(f64)
    if p.sigma is None:
        return (moved.to(f64) * d).sum(-1)
    total = sum(b_hi - b_lo for b_hi, b_lo, _ in schedule)
    centre = 0.5 * (b_v + b_a).to(f64)
    return ((moved.to(f64) - total * centre) * d / p.sigma.to(f64) ** 2).sum(-1)


class _Noise:
    """Per-step random numbers for a chunk, from the chunk's own generator: 32 random bits per
    hidden unit (and per Bernoulli visible unit), or a standard normal per Gaussian visible.

    The bits come two per 64-bit word. On the CPU the words are NumPy SFC64's (seeded from the
    chunk's generator, as ``core.rbm.uniform`` does): ~2× faster per word than torch's Mersenne
    Twister, and the draw was ~¼ of an AIS step at 88 × 150 (measured 207 of 870 µs per
    490-row step, one thread). On other devices ``random_`` fills preallocated int64 words."""

    def __init__(self, C, n_v, n_h, bernoulli, dtype, device, gen) -> None:
        self.C, self.n_v, self.n_h = C, n_v, n_h
        self.h_words, self.v_words = (n_h + 1) // 2, ((n_v + 1) // 2 if bernoulli else 0)
        self.sfc = None
        if torch.device(device).type == "cpu":
            self.sfc = sfc64(gen)
        else:
            self.words = torch.empty(
                C, self.h_words + self.v_words, dtype=torch.int64, device=device
            )
        self.normal_v = None if bernoulli else torch.empty(C, n_v, dtype=dtype, device=device)
        self.u_h = torch.empty(C, n_h, dtype=dtype, device=device)
        self.u_v = torch.empty(C, n_v, dtype=dtype, device=device) if bernoulli else None
        self.gen = gen
        self.bits_h = self.bits_v = torch.empty(0)

    def draw(self) -> None:
        if self.sfc is not None:
            raw = self.sfc.random_raw(self.C * (self.h_words + self.v_words)).view(np.int64)
            words = torch.from_numpy(raw).view(self.C, -1)
        else:
            words = self.words.random_(-(2**63), None, generator=self.gen)
        self.bits_h = words[:, : self.h_words].view(torch.int32)[:, : self.n_h]
        if self.u_v is not None:
            self.bits_v = words[:, self.h_words :].view(torch.int32)[:, : self.n_v]
        else:
            self.normal_v.normal_(generator=self.gen)  # type: ignore[union-attr]

    # 32 uniform bits b (a signed int) ↦ u = 1/2 + b·2⁻³² ∈ [0, 1] in one op; then h = [u < p].
    def uniform_h(self, half: Tensor) -> Tensor:
        return torch.add(half, self.bits_h, alpha=2.0**-32, out=self.u_h)

    def uniform_v(self, half: Tensor) -> Tensor:
        return torch.add(half, self.bits_v, alpha=2.0**-32, out=self.u_v)


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """Run torch ops single-threaded while our own worker threads split the chunks.

    Chunk-level threads beat intra-op threads here: each chunk's random numbers come from a serial
    Mersenne Twister, cache-sized chunks are too small for intra-op threading to pay, and two
    OpenMP teams on two cores spin against each other. ``torch.set_num_threads`` is process-wide,
    so the caller's setting is restored on exit (even on error)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _prepare(
    W: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    log_sigma: Tensor | None,
    b_a: Tensor,
    R: int,
    dtype: torch.dtype,
) -> _Prepared:
    n_v, n_h = W.shape
    bv = b_v.detach().to(dtype).expand(R, n_v).contiguous()
    bh = b_h.detach().to(dtype).expand(R, n_h).contiguous()
    threshold = 20.0 if dtype != torch.float64 else 40.0
    if log_sigma is None:
        return _Prepared(W, W.T.contiguous(), bv, bh, b_a, None, threshold)
    sigma = torch.exp(log_sigma.detach().to(dtype).expand(n_v))
    return _Prepared(
        W / sigma[:, None], (W * sigma[:, None]).T.contiguous(), bv, bh, b_a, sigma, threshold
    )


def _base_log_z(p: _Prepared, n_h: int) -> Tensor:
    """``log Z_A``: Bernoulli ``Σ_i softplus(b_A,i) + n_h log 2``; Gaussian
    ``Σ_i (log σ_i + ½ log 2π) + n_h log 2`` (independent of the base mean)."""
    f64 = torch.float64
    if p.sigma is None:
        per_unit = torch.nn.functional.softplus(p.b_a.to(f64)).sum(-1)
    else:
        per_unit = (torch.log(p.sigma.to(f64)) + _LOG_SQRT_2PI).sum().expand(p.b_a.shape[0])
    return per_unit + n_h * _LN2


def _log_mean_exp_se(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise ``log mean exp`` and the delta-method s.e. ``std(w) / (√M mean(w))``.

    The ratio is scale-free, so it is computed from ``w / max(w) ∈ (0, 1]`` (no overflow)."""
    M = log_w.shape[1]
    top = log_w.max(dim=1, keepdim=True).values
    w = torch.exp(log_w - top)
    mean = w.mean(dim=1)
    lme = top.squeeze(1) + torch.log(mean)
    if M < 2:
        return lme, torch.full_like(lme, math.nan)
    # Σ (w − mean)² over the row, not Tensor.std: std's kernel rounds a row differently
    # depending on how many rows come with it, and a row's estimate must not depend on that.
    sd = ((w - mean[:, None]) ** 2).sum(dim=1).div(M - 1).sqrt()
    return lme, sd / (math.sqrt(M) * mean)


# ----------------------------------------------------------------------------- validation


def _shape(x: object) -> str:
    return (
        f"a {x.dtype} tensor of shape {tuple(x.shape)}"
        if isinstance(x, Tensor)
        else type(x).__name__
    )


def _float_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(error_message(name, "an int ≥ 1", repr(value), f"pass a positive {name}"))
    return value


def _check_rbm(
    W: Tensor, b_v: Tensor, b_h: Tensor, log_sigma: Tensor | None, fn: str
) -> tuple[int, bool]:
    """Return ``(R, batched)``: the number of bias rows and whether any bias is 2-D."""
    for name, t in (("W", W), ("b_v", b_v), ("b_h", b_h)):
        if not isinstance(t, Tensor):
            raise InputTypeError(
                error_message(f"{fn}: {name}", "a torch.Tensor", type(t).__name__, "convert it")
            )
    if W.dim() != 2:
        raise InputError(
            error_message(f"{fn}: W", "a 2-D (n_visible, n_hidden) tensor", _shape(W), "reshape")
        )
    n_v, n_h = W.shape
    rows = []
    for name, t, n in (("b_v", b_v, n_v), ("b_h", b_h, n_h)):
        if t.dim() not in (1, 2) or t.shape[-1] != n:
            raise InputError(
                error_message(
                    f"{fn}: {name}",
                    f"shape ({n},) or (R, {n}) to match W {tuple(W.shape)}",
                    _shape(t),
                    "pass one bias per unit (a row per RBM)",
                )
            )
        if t.dim() == 2:
            rows.append(t.shape[0])
    if len(set(rows)) > 1:
        raise InputError(
            error_message(
                f"{fn}: b_v/b_h",
                "the same number of rows R",
                f"b_v {tuple(b_v.shape)} and b_h {tuple(b_h.shape)}",
                "give both biases one row per RBM (or share one as 1-D)",
            )
        )
    if rows and rows[0] == 0:
        raise InputError(error_message(f"{fn}: biases", "R ≥ 1 rows", "0 rows", "pass a bias row"))
    if log_sigma is not None and (
        not isinstance(log_sigma, Tensor)
        or log_sigma.numel() not in (1, n_v)
        or log_sigma.dim() > 1
    ):
        raise InputError(
            error_message(
                f"{fn}: log_sigma",
                f"None (Bernoulli visibles) or a tensor of shape ({n_v},)",
                _shape(log_sigma),
                "pass one log standard deviation per visible unit",
            )
        )
    return (rows[0] if rows else 1), bool(rows)


def _check_betas(betas: Tensor | None, n_betas: int) -> list[float]:
    if betas is None:
        return default_betas(n_betas).tolist()
    b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
    ok = b.dim() == 1 and b.numel() >= 2 and bool(torch.isfinite(b).all())
    if ok:
        ok = float(b[0]) == 0.0 and float(b[-1]) == 1.0 and bool((b[1:] > b[:-1]).all())
    if not ok:
        raise InputError(
            error_message(
                "betas",
                "a 1-D strictly increasing schedule from 0.0 to 1.0 (at least 2 values)",
                f"{_shape(b)}: {b.flatten()[:4].tolist()}…",
                "use default_betas(n) or torch.linspace(0, 1, n + 1)",
            )
        )
    return b.tolist()


def _check_base(
    base: Tensor | None, R: int, n_v: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    if base is None:
        return torch.zeros(R, n_v, dtype=dtype, device=device)
    if not isinstance(base, Tensor) or base.dim() not in (1, 2) or base.shape[-1] != n_v:
        raise InputError(
            error_message(
                "base_visible_bias",
                f"shape ({n_v},) or (R, {n_v})",
                _shape(base),
                "pass base_rate_visible_bias(train_data) or None",
            )
        )
    if base.dim() == 2 and base.shape[0] not in (1, R):
        raise InputError(
            error_message(
                "base_visible_bias",
                f"{R} rows (one per RBM) or 1",
                f"{base.shape[0]} rows",
                "match the biases' rows or pass a 1-D base bias",
            )
        )
    return base.detach().to(dtype=dtype, device=device).expand(R, n_v).contiguous()


def _check_init(
    init: Tensor, R: int, n_v: int, bernoulli: bool, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, int]:
    """Validate ``init_visible`` and return it as ``(R·M, n_v)`` rows (RBM-major) and ``M``."""
    if not isinstance(init, Tensor) or init.dim() not in (2, 3) or init.shape[-1] != n_v:
        raise InputError(
            error_message(
                "init_visible",
                f"samples of the target RBM of shape (M, {n_v}) or (R, M, {n_v})",
                _shape(init),
                "pass exact or long-chain samples, one row per reverse run",
            )
        )
    if init.dim() == 3 and init.shape[0] != R:
        raise InputError(
            error_message(
                "init_visible",
                f"{R} leading rows (one per RBM)",
                f"{init.shape[0]}",
                "pass (M, n_v) to share the samples or (R, M, n_v)",
            )
        )
    M = init.shape[-2]
    if M == 0:
        raise InputError(error_message("init_visible", "at least 1 run", "0", "pass samples"))
    x = init.detach().to(dtype=dtype, device=device)
    if not bool(torch.isfinite(x).all()):
        raise InputError(error_message("init_visible", "finite values", "NaN/Inf", "fix them"))
    if bernoulli:
        check_binary(x, "init_visible")
    return x.expand(R, M, n_v).reshape(R * M, n_v), M
