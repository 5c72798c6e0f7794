"""NADE frame distribution on raw tensors (Larochelle & Murray 2011), with batched biases.

NADE factorises a binary vector in the fixed order ``i = 0 .. n_v − 1``:

    h_i = σ(b_h + Σ_{k<i} v_k W_k),        p(v_i = 1 | v_<i) = σ(b_v,i + V_i · h_i)

with input weights ``W (n_v, n_h)`` and *untied* output weights ``V (n_v, n_h)``. The likelihood
is exact and normalised, so RNN-NADE (Boulanger-Lewandowski, Bengio & Vincent 2012, §3–4) trains
on ``−log p`` directly: its RNN emits both bias vectors ``b_v(t)``, ``b_h(t)`` per frame, which is
why every function accepts biases shared ``(n,)`` or per example ``(N, n)`` (or ``(1, n)``).

Teacher-forced quantities (log-likelihood, conditionals) are computed for all units at once: the
sums ``Σ_{k<i} v_k W_k`` for every ``i`` are one exclusive prefix sum (cumsum) over the visible
axis — for sparse binary frames (music) only over the units that are on, since ``h_i`` changes
nowhere else (:func:`_logits_by_segment`). Only ancestral sampling loops over units, and each of
its ``n_v`` steps is four small tensor ops on an incrementally updated pre-activation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from rnnrbm.validation import InputError, error_message

__all__ = [
    "nade_conditionals",
    "nade_expected_visible",
    "nade_hidden_states",
    "nade_log_prob",
    "nade_logits",
    "nade_sample",
]

# Teacher forcing materialises (N, n_v, n_h) tensors; above this many elements per chunk the batch
# is processed in chunks of examples (2^26 float32 = 256 MiB per intermediate tensor).
_MAX_CHUNK_ELEMENTS = 2**26


# --------------------------------------------------------------------------------------------
# Shape checks (cheap: shapes only, no data reads, so they cost nothing on the GPU)
# --------------------------------------------------------------------------------------------
def _shape(x: Tensor) -> str:
    return f"shape {tuple(x.shape)}"


def _check_weights(W: Tensor, V: Tensor | None = None) -> tuple[int, int]:
    if W.dim() != 2:
        raise InputError(
            error_message(
                "NADE W", "a 2-D tensor (n_visible, n_hidden)", _shape(W), "pass the input weights"
            )
        )
    if V is not None and V.shape != W.shape:
        raise InputError(
            error_message(
                "NADE V",
                f"the shape of W {tuple(W.shape)} (n_visible, n_hidden); NADE's output weights "
                "have one row per visible unit",
                _shape(V),
                "pass V with the same shape as W",
            )
        )
    return W.shape[0], W.shape[1]


def _bias_batch(name: str, b: Tensor, W: Tensor) -> int | None:
    """Check a bias against ``W``; return its number of rows, or None when shared."""
    width, unit = (W.shape[0], "visible") if name == "b_v" else (W.shape[1], "hidden")
    if b.dim() not in (1, 2) or b.shape[-1] != width:
        raise InputError(
            error_message(
                f"NADE bias {name}",
                f"shape ({width},) or (N, {width}) to match W {tuple(W.shape)}",
                _shape(b),
                f"give {name} one column per {unit} unit",
            )
        )
    return b.shape[0] if b.dim() == 2 and b.shape[0] != 1 else None


def _check_params(W: Tensor, V: Tensor, b_v: Tensor, b_h: Tensor) -> tuple[int, int, int | None]:
    """Check ``W``, ``V``, ``b_v``, ``b_h`` agree; return ``(n_v, n_h, bias rows or None)``."""
    n_v, n_h = _check_weights(W, V)
    rows_v, rows_h = _bias_batch("b_v", b_v, W), _bias_batch("b_h", b_h, W)
    if rows_v is not None and rows_h is not None and rows_v != rows_h:
        raise InputError(
            error_message(
                "NADE biases",
                "the same number of rows N in b_v and b_h",
                f"b_v {tuple(b_v.shape)} and b_h {tuple(b_h.shape)}",
                "give both biases one row per example (or share one with shape (n,))",
            )
        )
    return n_v, n_h, rows_v if rows_v is not None else rows_h


def _check_v(v: Tensor, n_v: int, batch: int | None) -> int:
    """Check the visible batch ``v (N, n_v)`` against the weights and biases; return ``N``."""
    if v.dim() != 2 or v.shape[1] != n_v:
        raise InputError(
            error_message(
                "NADE v", f"shape (N, {n_v})", _shape(v), "pass a batch of visible vectors"
            )
        )
    if batch is not None and batch != v.shape[0]:
        raise InputError(
            error_message(
                "NADE biases",
                f"one row per example of v (N = {v.shape[0]}) or shared biases of shape (n,)",
                f"{batch} rows",
                "pass per-example biases with as many rows as v",
            )
        )
    return v.shape[0]


def _resolve_n(batch: int | None, n: int | None) -> int:
    """Number of samples: the bias rows, else ``n``, else 1."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InputError(
            error_message("NADE n", "an integer ≥ 1 (number of samples)", repr(n), "pass one")
        )
    if batch is None:
        return 1 if n is None else n
    if n is not None and n != batch:
        raise InputError(
            error_message(
                "NADE n",
                f"None or {batch}, the number of rows of the per-example biases",
                repr(n),
                "omit n: per-example biases give one sample per row",
            )
        )
    return batch


def _rows(b: Tensor, N: int) -> Tensor:
    """Bias broadcast to ``(N, n)`` (a view when shared)."""
    return b.expand(N, b.shape[-1])


# --------------------------------------------------------------------------------------------
# Teacher-forced quantities: every unit at once
# --------------------------------------------------------------------------------------------
def _hidden_states(v: Tensor, W: Tensor, b_h: Tensor) -> Tensor:
    N = v.shape[0]
    # Row 0 of the stack is b_h and row i ≥ 1 is v_{i-1} W_{i-1}, so ONE inclusive cumsum over
    # the visible axis gives b_h + Σ_{k<i} v_k W_k for every i: the exclusive prefix sum with the
    # bias folded in.
    terms = torch.cat([_rows(b_h, N).unsqueeze(1), v[:, :-1, None] * W[:-1]], dim=1)
    return torch.sigmoid(terms.cumsum(dim=1))


def nade_hidden_states(v: Tensor, W: Tensor, b_h: Tensor) -> Tensor:
    """All NADE hidden vectors ``h_i = σ(b_h + Σ_{k<i} v_k W_k)`` for every unit ``i``.

    Args:
        v: visible batch ``(N, n_v)`` (0/1; any real or bool dtype works).
        W: input weights ``(n_v, n_h)``.
        b_h: hidden bias ``(n_h,)`` shared, or ``(N, n_h)`` per example.

    Returns:
        ``(N, n_v, n_h)``: ``[:, i]`` is the hidden vector that predicts unit ``i``.
    """
    n_v, _ = _check_weights(W)
    batch = _bias_batch("b_h", b_h, W)
    _check_v(v, n_v, batch)
    return _hidden_states(v, W, b_h)


def _logits_dense(v: Tensor, W: Tensor, V: Tensor, b_v: Tensor, b_h: Tensor) -> Tensor:
    h = _hidden_states(v, W, b_h)
    return b_v + (h * V).sum(-1)  # a_i = b_v,i + V_i · h_i, (N, n_v)


def _logits_by_segment(
    on: Tensor, segment: Tensor, slots: int, W: Tensor, V: Tensor, b_v: Tensor, b_h: Tensor
) -> Tensor:
    """Teacher-forced logits of binary frames from their distinct hidden vectors only.

    ``h_i`` changes only after a unit that is on, so a frame with ``m`` notes has ``m + 1``
    distinct hidden vectors: ``H_j = σ(b_h + W_{k_1} + … + W_{k_j})`` over its on-units
    ``k_1 < … < k_m``, and unit ``i`` reads ``H_{s(i)}`` with ``s(i)`` the number of on-units
    before ``i`` (``segment``). The prefix sums add the same rows in the same order as the dense
    cumsum (whose other terms are exact zeros), and ``a_i = b_v,i + V_i · H_{s(i)}`` is one
    ``(N·S, n_h) × (n_h, n_v)`` GEMM and a gather: ``S = max m + 1`` slots per frame instead of
    ``n_v`` hidden vectors (music frames hold ~4 of 88 keys: ~15× less memory traffic).
    """
    N, n_h = on.shape[0], W.shape[1]
    rows, cols = on.nonzero(as_tuple=True)
    steps = torch.cat([_rows(b_h, N).unsqueeze(1), W.new_zeros(N, slots - 1, n_h)], dim=1)
    steps = steps.index_put((rows, segment[rows, cols] + 1), W[cols])
    hidden = torch.sigmoid(steps.cumsum(dim=1))  # (N, S, n_h): H_0 .. H_{S−1}
    per_slot = hidden @ V.T  # (N, S, n_v): V_i · H_j for every slot j
    return b_v + per_slot.gather(1, segment.unsqueeze(1)).squeeze(1)


def _logits_chunk(v: Tensor, W: Tensor, V: Tensor, b_v: Tensor, b_h: Tensor) -> Tensor:
    """The segment pass for sparse binary frames (≤ n_v / 4 units on), else the dense one."""
    on = v > 0.5
    if v.shape[0] and bool(torch.equal(on.to(v.dtype), v)):
        slots = int(on.sum(1).max()) + 1  # the most notes in a frame, plus the empty prefix
        if 4 * slots <= v.shape[1]:
            segment = on.cumsum(dim=1) - on.long()  # on-units before each unit, (N, n_v)
            return _logits_by_segment(on, segment, slots, W, V, b_v, b_h)
    return _logits_dense(v, W, V, b_v, b_h)


def nade_logits(
    v: Tensor,
    W: Tensor,
    V: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """Teacher-forced logits ``a_i = b_v,i + V_i · h_i`` with ``p(v_i = 1 | v_<i) = σ(a_i)``.

    Args:
        v: visible batch ``(N, n_v)``.
        W, V: input and output weights ``(n_v, n_h)``.
        b_v, b_h: biases ``(n_v,)``/``(n_h,)`` shared or ``(N, ·)`` per example.
        chunk_size: examples per chunk; ``None`` picks the largest chunk whose
            ``(chunk, n_v, n_h)`` intermediates stay under 2^26 elements. Results do not depend
            on it beyond floating-point rounding.
        checkpoint: recompute each chunk in the backward pass instead of keeping its activations
            (activation checkpointing). Without it autograd keeps the hidden states
            ``(N, n_v, n_h)`` of the whole batch for the backward pass, chunked or not (chunking
            still bounds the forward temporaries); with it only one chunk's at a time, at the
            cost of a second forward pass.

    Returns:
        ``(N, n_v)`` logits, differentiable w.r.t. all tensor arguments.
    """
    n_v, n_h, batch = _check_params(W, V, b_v, b_h)
    N = _check_v(v, n_v, batch)
    if chunk_size is None:
        chunk_size = max(1, _MAX_CHUNK_ELEMENTS // max(1, n_v * n_h))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(
            error_message("NADE chunk_size", "an integer ≥ 1 or None", repr(chunk_size), "fix it")
        )
    use_ckpt = checkpoint and torch.is_grad_enabled()
    if N <= chunk_size and not use_ckpt:
        return _logits_chunk(v, W, V, b_v, b_h)

    def per_example(b: Tensor, s: slice) -> Tensor:
        return b[s] if b.dim() == 2 and b.shape[0] != 1 else b

    out = []
    for start in range(0, N, chunk_size):
        s = slice(start, start + chunk_size)
        args = (v[s], W, V, per_example(b_v, s), per_example(b_h, s))
        if use_ckpt:
            out.append(_checkpoint(_logits_chunk, *args, use_reentrant=False))
        else:
            out.append(_logits_chunk(*args))
    return torch.cat(out, dim=0)


def nade_log_prob(
    v: Tensor,
    W: Tensor,
    V: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    *,
    chunk_size: int | None = None,
    checkpoint: bool = False,
) -> Tensor:
    """Exact ``log p(v)`` (natural log) per example, ``(N,)``; differentiable for training.

    ``log p = Σ_i v_i logσ(a_i) + (1 − v_i) logσ(−a_i)``, written as the identical
    ``Σ_i v_i a_i + logσ(−a_i)`` (since ``logσ(a) − logσ(−a) = a``): one log-sigmoid, finite for
    any logit. ``v`` is expected binary; see :func:`nade_logits` for the other arguments and for
    memory (chunking over ``N``, optional checkpointing).
    """
    a = nade_logits(v, W, V, b_v, b_h, chunk_size=chunk_size, checkpoint=checkpoint)
    return (v * a + F.logsigmoid(-a)).sum(-1)


def nade_conditionals(
    v: Tensor,
    W: Tensor,
    V: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Teacher-forced ``p(v_i = 1 | v_<i)`` for every unit, ``(N, n_v)``."""
    return torch.sigmoid(nade_logits(v, W, V, b_v, b_h, chunk_size=chunk_size))


# --------------------------------------------------------------------------------------------
# Generation: ancestral sampling (the loop over units is inherent to the autoregressive model)
# --------------------------------------------------------------------------------------------
def _ancestral_pass(
    W: Tensor,
    V: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    logits: Tensor,
    emit: Callable[[int, Tensor], Tensor],
) -> None:
    """Fill ``logits (n_v, N)`` unit by unit; ``emit(i, logit_i)`` is what unit i feeds forward."""
    # emit returns a sample (nade_sample) or a probability (nade_expected_visible), (N,). The
    # running pre-activation a = b_h + Σ_{k<i} x_k W_k of those values gets a rank-1 add per
    # unit, so a step costs O(N·n_h). Per-unit operands are unbound once into Python lists.
    n_v, N = logits.shape
    bias = _rows(b_v, N).T.contiguous().unbind(0)
    logit_rows, W_rows, V_rows = logits.unbind(0), W.unbind(0), V.unbind(0)
    a = _rows(b_h, N).clone()
    h = torch.empty_like(a)
    for i in range(n_v):
        torch.sigmoid(a, out=h)
        x = emit(i, torch.addmv(bias[i], h, V_rows[i], out=logit_rows[i]))
        if i + 1 < n_v:
            a.addr_(x, W_rows[i])


def _check_clamp(clamp: tuple[Tensor, Tensor], N: int, n_v: int) -> tuple[Tensor, Tensor]:
    try:
        mask, values = clamp
    except (TypeError, ValueError) as exc:
        raise InputError(
            error_message(
                "NADE clamp", "a pair (mask, values)", type(clamp).__name__, "pass two tensors"
            )
        ) from exc
    for name, t in (("mask", mask), ("values", values)):
        if not isinstance(t, Tensor) or t.dim() not in (1, 2) or t.shape[-1] != n_v:
            got = _shape(t) if isinstance(t, Tensor) else type(t).__name__
            raise InputError(
                error_message(
                    f"NADE clamp {name}", f"a tensor of shape (N, {n_v}) or ({n_v},)", got, "fix it"
                )
            )
        if t.dim() == 2 and t.shape[0] not in (1, N):
            raise InputError(
                error_message(
                    f"NADE clamp {name}",
                    f"{N} rows, one per sample (or 1 to share)",
                    _shape(t),
                    "match the number of samples",
                )
            )
    if mask.dtype != torch.bool:
        raise InputError(
            error_message("NADE clamp mask", "a bool tensor", f"dtype {mask.dtype}", "use mask > 0")
        )
    return mask.expand(N, n_v), values.expand(N, n_v)


def nade_sample(
    W: Tensor,
    V: Tensor,
    b_v: Tensor,
    b_h: Tensor,
    n: int | None = None,
    generator: torch.Generator | None = None,
    clamp: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Ancestral sampling ``v_0, v_1, …`` from ``p(v_i | v_<i)`` in the NADE order.

    The running pre-activation ``a = b_h + Σ_{k<i} v_k W_k`` is updated by a rank-1 add per unit,
    so a step costs ``O(N·n_h)``: ``σ(a)``, one matrix-vector product for the logit, one compare
    against a pre-drawn logistic threshold (``u < σ(x)`` ⟺ ``logit(u) < x``), one rank-1 update.

    Args:
        W, V: input and output weights ``(n_v, n_h)``.
        b_v, b_h: biases; ``(N, ·)`` per-example biases give ``N`` samples.
        n: number of samples for shared biases (default 1); must equal ``N`` if given with
            per-example biases.
        generator: source of randomness. Uniforms are drawn as one ``(N, n_v)`` block, so a
            batch draws exactly what looping over its examples in order would.
        clamp: ``(mask, values)``, each ``(N, n_v)`` or ``(n_v,)``; where ``mask`` is True the unit
            is set to ``values`` instead of sampled, and later units are sampled given it.
            **This is exact conditioning only when every clamped unit precedes every free unit in
            the order** (e.g. clamping low keys and sampling high ones). A free unit before a
            clamped one is drawn without seeing it: the free units then follow NADE's ancestral
            process with the clamped units substituted, not ``p(v_free | v_clamped)``. For
            melody harmonisation (melody typically above the accompaniment on an 88-key roll
            ordered low to high) the accompaniment would ignore the melody; exact conditioning
            there needs e.g. Gibbs sampling on the free units using ``nade_log_prob``.

    Returns:
        ``(sample, probabilities)``, both ``(N, n_v)`` in ``W``'s dtype and device: the sample and
        the model's ``p(v_i = 1 | v_<i)`` used at each unit (for clamped units, the probability
        the model assigned before the clamp overrode it). Runs under ``torch.no_grad``.
    """
    n_v, _, batch = _check_params(W, V, b_v, b_h)
    N = _resolve_n(batch, n)
    if clamp is not None:
        mask, values = _check_clamp(clamp, N, n_v)
    with torch.no_grad():
        dtype, device = W.dtype, W.device
        # Per-unit operands as (n_v, N) rows, unbound once so the loop indexes a Python list.
        u = torch.rand(N, n_v, generator=generator, dtype=dtype, device=device)
        thr = torch.logit(u).T.contiguous().unbind(0)
        logits = torch.empty(n_v, N, dtype=dtype, device=device)
        v = torch.empty(n_v, N, dtype=dtype, device=device)
        v_rows = v.unbind(0)
        if clamp is not None:
            mask_rows = mask.T.unbind(0)
            value_rows = values.to(dtype).T.unbind(0)

        def draw(i: int, logit: Tensor) -> Tensor:
            torch.gt(logit, thr[i], out=v_rows[i])
            if clamp is not None:
                torch.where(mask_rows[i], value_rows[i], v_rows[i], out=v_rows[i])
            return v_rows[i]

        _ancestral_pass(W, V, b_v, b_h, logits, draw)
        return v.T.contiguous(), torch.sigmoid(logits).T.contiguous()


def nade_expected_visible(
    W: Tensor, V: Tensor, b_v: Tensor, b_h: Tensor, n: int | None = None
) -> Tensor:
    """Mean-field **approximation** of ``E[v]``, greedy in the NADE order:

        p_i = σ(b_v,i + V_i · σ(b_h + Σ_{k<i} p_k W_k))

    Each unit is fed its predecessors' *probabilities* instead of samples. This is deterministic
    and cheap (one pass, like a single ancestral sample) but not the exact marginal
    ``E[v_i] = Σ_{v_<i} p(v_<i) p(v_i = 1 | v_<i)``, which would need an expectation of a sigmoid;
    only ``p_0`` is always exact (and all of them when ``W = 0``).

    Returns ``(N, n_v)`` probabilities (``N`` as in :func:`nade_sample`), under ``torch.no_grad``.
    """
    n_v, _, batch = _check_params(W, V, b_v, b_h)
    N = _resolve_n(batch, n)
    with torch.no_grad():
        p = torch.empty(n_v, N, dtype=W.dtype, device=W.device)
        p_rows = p.unbind(0)

        def probability(i: int, logit: Tensor) -> Tensor:
            return torch.sigmoid(logit, out=p_rows[i])

        _ancestral_pass(W, V, b_v, b_h, torch.empty_like(p), probability)
        return p.T.contiguous()
