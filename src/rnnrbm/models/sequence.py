"""Temporal models = a recurrence + a frame estimator (docs/design.md §1), and their four builders.

``SequenceModel(recurrence, estimator)`` gives every frame ``t`` of every sequence its own biases
``b + Δb(t)`` from the recurrence (which reads frames ``< t`` only) and models the frame with the
estimator. Training and evaluation send **all real frames of a batch through the estimator in one
call**:

* RBM frames (RNN-RBM, RTRBM, LSTM-RTRBM): the CD-k surrogate ``mean F(v_t; b_t) − F(v⁻_t; b_t)``
  with detached negatives ``v⁻`` (k = 15 Gibbs steps by default, as in Boulanger-Lewandowski,
  Bengio & Vincent 2012 §5, "BL2012"); autograd carries its gradient through ``b_t`` into the
  recurrence — BPTT as in the paper. ``log_prob`` is ``−F(v_t; b_t) − log Z(b_t)`` with ``log Z``
  exact (affordable when ``core.partition.exact_is_affordable`` holds, rows = frames) or from
  one batched AIS run over all frames.
* NADE frames (RNN-NADE, BL2012 §4): exact ``−mean log p(v_t | v_<t)``.

Batches are ``(rolls (B, T, n_v) float, mask (B, T) bool)`` as yielded by
``data.batching.SequenceBatches`` / ``pad_sequences`` (right padding); padding never enters a loss
or a log-probability. ``SequenceEpochs`` adapts ``SequenceBatches`` to ``training.fit``'s
``Batches`` protocol (``epoch(e, start)``). Sequences longer than a chunk are cut into chunks by
``data.batching`` (``max_len``): by default each chunk restarts the recurrence from its learned
initial state (the tutorial's scheme); with ``carry_state=True`` a batch is ``(rolls, mask,
loss_mask)`` whose rolls hold each chunk *with the frames of its piece before it* and whose
``loss_mask`` marks the chunk: the recurrence reads the whole prefix, so the state at the chunk's
start is exactly the state carried from the piece's start (under the current parameters), while
the loss, the estimator's CD chains and the evaluation cover the chunk's frames only.

Frame pretraining (BL2012 §5 initialise the RBM from one trained on independent frames) is
offered without importing the training loop (it sits above models): ``frame_loss(frames)`` and
the ``FramePretraining(model)`` wrapper, whose parameters are the estimator's only, so
``training.fit(FramePretraining(model), RowBatches(frames, 100), …)`` trains the plain RBM/NADE
part (offsets zero) in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnrbm.core.estimators import FrameEstimator, LogProb, NADEFrame, RBMFrame
from rnnrbm.core.partition import exact_is_affordable
from rnnrbm.models.recurrence import (
    BiasRecurrence,
    LSTMRecurrence,
    MeanFieldRecurrence,
    RNNRecurrence,
)
from rnnrbm.registry import register_model
from rnnrbm.validation import (
    InputError,
    InputTypeError,
    check_choice,
    check_positive_int,
    error_message,
    parse_dtype,
)

__all__ = [
    "LSTMRTRBM",
    "RNNNADE",
    "RNNRBM",
    "RTRBM",
    "SEQUENCE_MODELS",
    "FramePretraining",
    "SequenceEpochs",
    "SequenceModel",
    "build_sequence_model",
]

Batch = tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor] | Tensor


class SequenceModel(nn.Module):
    """A recurrence that emits per-frame bias offsets + a frame estimator (docs/design.md §3).

    Parameters
    ----------
    recurrence : a :class:`~rnnrbm.models.recurrence.BiasRecurrence` whose ``offset_sizes``
        equal the estimator's.
    estimator : a frame estimator (``RBMFrame`` or ``NADEFrame``).

    Use the registered builders (``RNNRBM``, ``RTRBM``, ``LSTMRTRBM``, ``RNNNADE`` or
    :func:`build_sequence_model`) for models that save/load by name; a bare ``SequenceModel``
    trains and evaluates but has no ``config()``.
    """

    model_type: str

    def __init__(self, recurrence: BiasRecurrence, estimator: FrameEstimator) -> None:
        super().__init__()
        if tuple(recurrence.offset_sizes) != tuple(estimator.offset_sizes):
            raise InputError(
                error_message(
                    "recurrence.offset_sizes",
                    f"the estimator's offset_sizes {tuple(estimator.offset_sizes)}",
                    repr(tuple(recurrence.offset_sizes)),
                    "build the recurrence with offset_sizes=estimator.offset_sizes",
                )
            )
        self.recurrence = recurrence
        self.estimator = estimator  # type: ignore[assignment]

    # ----------------------------------------------------------------- shapes & checks
    @property
    def n_visible(self) -> int:
        return self.estimator.n_visible

    def _param(self) -> Tensor:
        return next(self.estimator.parameters())  # type: ignore[attr-defined]

    def _unpack(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(rolls (B, T, n_v), mask (B, T) bool, loss_mask (B, T) bool)`` on the model's dtype
        and device: ``mask`` marks real frames (the recurrence reads them), ``loss_mask`` the
        frames that are scored (default: all real frames; a carried-state chunk: the chunk)."""
        rolls, mask, loss_mask = self._unpack_on_host(batch)
        return rolls, mask.to(rolls.device), loss_mask.to(rolls.device)

    def _unpack_on_host(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`_unpack`, with the masks left where the batch brought them: on the host for
        data.batching's batches, so decisions taken from them need no sync with the device."""
        if isinstance(batch, Tensor):
            rolls, mask, loss_mask = batch, None, None
        elif isinstance(batch, tuple | list) and len(batch) in (2, 3):
            rolls, mask, loss_mask = (*batch, None) if len(batch) == 2 else batch
        else:
            raise InputTypeError(
                error_message(
                    "batch",
                    "a pair (rolls (B, T, n_visible), mask (B, T) bool), a triple with a loss "
                    "mask, or a rolls tensor",
                    type(batch).__name__,
                    "pass what data.batching.pad_sequences / SequenceBatches yield",
                )
            )
        p = self._param()
        if not isinstance(rolls, Tensor) or rolls.dim() != 3 or rolls.shape[-1] != self.n_visible:
            got = f"shape {tuple(rolls.shape)}" if isinstance(rolls, Tensor) else type(rolls)
            raise InputError(
                error_message(
                    "batch rolls",
                    f"a (B, T, {self.n_visible}) tensor",
                    str(got),
                    "pad the sequences with data.batching.pad_sequences",
                )
            )
        rolls = rolls.to(device=p.device, dtype=p.dtype)
        masks = []
        for name, m in (("batch mask", mask), ("batch loss mask", loss_mask)):
            if m is None:
                m = masks[0] if masks else torch.ones(rolls.shape[:2], dtype=torch.bool)
            elif not isinstance(m, Tensor) or m.shape != rolls.shape[:2]:
                got = f"shape {tuple(m.shape)}" if isinstance(m, Tensor) else type(m)
                raise InputError(
                    error_message(
                        name,
                        f"a bool tensor of shape {tuple(rolls.shape[:2])} (B, T)",
                        str(got),
                        "pass the masks returned by data.batching (pad_sequences / "
                        "SequenceBatches)",
                    )
                )
            masks.append(m.to(device=masks[0].device if masks else m.device, dtype=torch.bool))
        mask, loss_mask = masks
        return rolls, mask, loss_mask & mask

    # ----------------------------------------------------------------- frames & offsets
    def offsets(self, batch: Batch) -> tuple[Tensor, ...]:
        """Per-frame offsets ``(B, T, size)`` (values at padded positions are meaningless)."""
        rolls, mask, _ = self._unpack(batch)
        return self.recurrence(rolls, mask, self.estimator)

    def frame_inputs(self, batch: Batch) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
        """The real frames and their offsets, flattened for ONE estimator call.

        Returns ``(v (N, n_v), offsets ((N, size), …), loss_mask (B, T))`` with ``N`` = scored
        frames (real frames, or a carried-state batch's chunks) in row-major (sequence, time)
        order. Offsets carry gradients into the recurrence.
        """
        rolls, mask, scored = self._unpack_on_host(batch)
        offsets = self.recurrence(rolls, mask.to(rolls.device), self.estimator)
        B, T, n_v = rolls.shape
        v, flat = rolls.reshape(B * T, n_v), tuple(o.reshape(B * T, -1) for o in offsets)
        loss_mask = scored.to(rolls.device)
        if bool(scored.all()):  # the common unpadded case: views, no gather
            return v, flat, loss_mask
        # Row indices found where the masks are (the host), then one gather on the device.
        rows = scored.reshape(-1).nonzero().squeeze(1).to(rolls.device)
        return v[rows], tuple(o[rows] for o in flat), loss_mask

    # ----------------------------------------------------------------- training
    def loss(
        self, batch: Batch, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean over the batch's real frames of the estimator loss (CD-k surrogate or exact NLL).

        Every frame of every sequence weighs the same (a flat frame mean, as the benchmark's NLL
        per frame), so padding changes nothing.
        """
        v, offsets, _ = self.frame_inputs(batch)
        loss = self.estimator.loss(v, offsets, generator=generator)
        return loss, {"frames": torch.tensor(float(v.shape[0]))}

    def frame_loss(
        self, frames: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The estimator alone (offsets zero) on independent frames ``(N, n_v)``: pretraining."""
        p = self._param()
        frames = frames.to(device=p.device, dtype=p.dtype)
        return self.estimator.loss(frames, None, generator=generator), {}

    def validate(self, valid: Batch | Iterable[Batch]) -> dict[str, float]:
        """``nll_per_frame`` (flat mean over real frames, nats) when it is exact: NADE frames,
        or RBM frames when ``core.partition.exact_is_affordable`` holds (rows = the real frames
        of ``valid``); otherwise no metric (AIS per epoch is too slow to monitor — evaluate
        with ``log_prob(..., method="ais")``)."""
        if not self._exact_is_affordable(1):  # too large whatever the data
            return {}
        batches = [valid] if isinstance(valid, Tensor | tuple) else list(valid)
        count = sum(int(self._unpack(b)[2].sum()) for b in batches)
        if not self._exact_is_affordable(count):
            return {}
        total = sum(float(self.log_prob(b).value.sum()) for b in batches)
        return {"nll_per_frame": -total / max(count, 1)}

    def _exact_is_affordable(self, rows: int) -> bool:
        """``core.partition.exact_is_affordable`` for ``rows`` frames (NADE: always exact)."""
        est = self.estimator
        if not isinstance(est, RBMFrame):
            return True
        gaussian = est.visible == "gaussian"
        return exact_is_affordable(est.n_visible, est.n_hidden, rows, gaussian=gaussian)

    # ----------------------------------------------------------------- evaluation
    def log_prob(
        self,
        batch: Batch,
        method: Literal["exact", "ais"] = "exact",
        **ais_options: Any,
    ) -> LogProb:
        """``log p(v_t | v_<t)`` per frame, ``value``/``se`` of shape ``(B, T)`` (float64, nats).

        Padded (and, in a carried-state batch, context) positions hold 0 (value and s.e.). RBM
        frames: ``"exact"`` enumerates the smaller layer per frame (choose it when
        ``core.partition.exact_is_affordable`` holds); ``"ais"`` runs ONE batched AIS over
        every scored frame (options ``n_runs``, ``n_betas``, ``base_visible_bias``,
        ``generator``). NADE frames are always exact.
        """
        with torch.no_grad():
            v, offsets, mask = self.frame_inputs(batch)
            lp = self.estimator.log_prob(v, offsets, method, **ais_options)
            value = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)
            se = torch.zeros_like(value)
            value[mask] = lp.value.to(torch.float64)
            se[mask] = lp.se.to(torch.float64)
        return LogProb(value, se, lp.estimator)

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        n_steps: int,
        primer: Tensor | None = None,
        gibbs_steps: int = 25,
        clamp: tuple[Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
        n: int = 1,
        mean_last: bool = False,
    ) -> Tensor:
        """Sample ``n`` sequences frame by frame; returns ``(n, T0 + n_steps, n_visible)``.

        ``primer`` ``(n or 1, T0, n_v)`` is read by the recurrence first and returned unchanged
        as the first ``T0`` frames. Each new frame is drawn from the estimator with the current
        offsets (RBM: ``gibbs_steps`` block-Gibbs steps started from the empty frame, as the
        paper's code does; NADE: an exact ancestral draw) and fed back. ``clamp=(mask, values)``
        of shape ``(n or 1, n_steps or T0 + n_steps, n_v)`` holds the masked notes of each new
        frame at ``values`` (harmonisation; for NADE see the ordering caveat of
        ``NADEFrame.sample``). ``mean_last=True`` outputs — and feeds
        back — the expected frame ``E[v | h]`` of the chain's last step (NADE: its greedy
        mean-field pass) instead of a binary draw.
        """
        check_positive_int(n, "n")
        check_positive_int(n_steps, "n_steps", minimum=0)
        p = self._param()
        rec, est = self.recurrence, self.estimator
        primer_t = self._check_frames("primer", primer, n, None) if primer is not None else None
        T0 = 0 if primer_t is None else primer_t.shape[1]
        cmask = cvals = None
        if clamp is not None:
            if not isinstance(clamp, tuple | list) or len(clamp) != 2:
                raise InputError(
                    error_message("clamp", "a pair (mask, values)", type(clamp).__name__, "fix it")
                )
            cmask = self._check_frames("clamp mask", clamp[0], n, (n_steps, T0 + n_steps))
            cvals = self._check_frames("clamp values", clamp[1], n, (cmask.shape[1],))
            if clamp[0].dtype != torch.bool:
                raise InputError(
                    error_message("clamp mask", "a bool tensor", str(clamp[0].dtype), "mask > 0")
                )
            cmask, cvals = cmask.bool()[:, -n_steps:], cvals[:, -n_steps:]
        state = rec.initial_state(n)
        # Chains start from silence: music frames are sparse (~4 of 88 keys), so an all-zero
        # start is near the mode, while random bits (44 keys on) leave short chains stuck in
        # dense clusters (measured 8.4 notes/frame after 25 steps vs 3.9 in JSB).
        silence = p.new_zeros(n, self.n_visible)
        frames: list[Tensor] = []
        for t in range(T0):
            frames.append(primer_t[:, t])  # type: ignore[index]
            state = rec.step(state, primer_t[:, t], est)  # type: ignore[index]
        for s in range(n_steps):
            offsets = rec.offsets(state, est)
            c = None if cmask is None else (cmask[:, s], cvals[:, s])  # type: ignore[index]
            draw = est.expected_visible if mean_last else est.sample
            v = draw(offsets, gibbs_steps, generator, c, v0=silence)
            frames.append(v)
            if s + 1 < n_steps:
                state = rec.step(state, v, est, offsets)
        if not frames:
            return p.new_zeros((n, 0, self.n_visible))
        return torch.stack(frames, 1)

    def _check_frames(self, name: str, x: Any, n: int, lengths: tuple[int, ...] | None) -> Tensor:
        """``x (1 or n, T, n_v)`` → ``(n, T, n_v)`` on the model's dtype/device."""
        p = self._param()
        ok = isinstance(x, Tensor) and x.dim() == 3 and x.shape[-1] == self.n_visible
        ok = ok and x.shape[0] in (1, n) and (lengths is None or x.shape[1] in lengths)
        if not ok:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            T = "T" if lengths is None else " or ".join(str(t) for t in sorted(set(lengths)))
            raise InputError(
                error_message(
                    name,
                    f"a tensor of shape ({n} or 1, {T}, {self.n_visible})",
                    got,
                    "pass batch-first frames (add a leading dimension for one sequence)",
                )
            )
        if x.dtype == torch.bool and name == "clamp mask":
            return x.to(p.device).expand(n, -1, -1)
        return x.to(device=p.device, dtype=p.dtype).expand(n, -1, -1)

    # ----------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        cfg = getattr(self, "_config", None)
        if cfg is None:
            raise InputError(
                error_message(
                    "SequenceModel.config",
                    "a model built by RNNRBM / RTRBM / LSTMRTRBM / RNNNADE (build_sequence_model)",
                    "a bare SequenceModel(recurrence, estimator)",
                    "build it with build_sequence_model(name, ...) to save it",
                )
            )
        return dict(cfg)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SequenceModel:
        return cls(**config)


# --------------------------------------------------------------------------- the four builders
Device = str | torch.device | None


def _setup(
    config: dict[str, Any], positive: tuple[str, ...]
) -> tuple[torch.Generator, torch.dtype]:
    """Validate a builder's config; return its seeded generator and torch dtype."""
    for name in positive:
        check_positive_int(config[name], name)
    return torch.Generator().manual_seed(int(config["seed"])), parse_dtype(config["dtype"])


def _rbm_frame(
    config: dict[str, Any], gen: torch.Generator, dtype: torch.dtype, device
) -> RBMFrame:
    n_v, n_h, k, std = config["n_visible"], config["n_hidden"], config["k"], config["init_std"]
    return RBMFrame(
        n_v, n_h, k=k, gradient=config["gradient"], init_std=std, generator=gen, dtype=dtype,
        device=device,
    )  # fmt: skip


def _recurrent_net(
    cls: type[RNNRecurrence] | type[LSTMRecurrence],
    config: dict[str, Any],
    offset_sizes: tuple[int, ...],
    gen: torch.Generator,
    dtype: torch.dtype,
    device: Device,
    **options: Any,
) -> RNNRecurrence | LSTMRecurrence:
    """An RNN/LSTM recurrence from a builder's config (created after the estimator: the seeded
    generator's draw order fixes the initial weights)."""
    return cls(
        config["n_visible"],
        config["n_recurrent"],
        offset_sizes,
        init_std=config["recurrent_init_std"],
        generator=gen,
        dtype=dtype,
        device=device,
        **options,
    )


@register_model("rnn-rbm")
class RNNRBM(SequenceModel):
    """RNN-RBM (BL2012 §3): ``RNNRecurrence`` (the paper's σ by default; ``"tanh"`` as the
    deeplearning.net tutorial, which plateaus ~1 nat/frame worse on JSB) + ``RBMFrame`` trained by
    CD-``k``. Weights ~ N(0, init_std²) (RBM) and N(0, recurrent_init_std²). ``gradient="direct"``
    (any of the four models): the gradient written out — the CD surrogate's (``RBMFrame``) and
    the RNN's backward pass on CPU (``RNNRecurrence``) — instead of autograd's."""

    def __init__(
        self,
        n_visible: int = 88,
        n_hidden: int = 150,
        n_recurrent: int = 100,
        k: int = 15,
        *,
        activation: Literal["tanh", "sigmoid"] = "sigmoid",
        gradient: Literal["autograd", "direct"] = "autograd",
        init_std: float = 0.01,
        recurrent_init_std: float = 0.01,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        config = dict(
            n_visible=n_visible, n_hidden=n_hidden, n_recurrent=n_recurrent, k=k,
            activation=activation, gradient=gradient, init_std=init_std,
            recurrent_init_std=recurrent_init_std, seed=seed, dtype=dtype,
        )  # fmt: skip
        gen, dt = _setup(config, ("n_visible", "n_hidden", "n_recurrent", "k"))
        est = _rbm_frame(config, gen, dt, device)
        opts = {"activation": activation, "gradient": gradient}
        super().__init__(
            _recurrent_net(RNNRecurrence, config, est.offset_sizes, gen, dt, device, **opts), est
        )
        self._config = config


@register_model("lstm-rtrbm")
class LSTMRTRBM(SequenceModel):
    """LSTM-RTRBM (Lyu et al. 2015): ``LSTMRecurrence`` + ``RBMFrame`` trained by CD-``k``."""

    def __init__(
        self,
        n_visible: int = 88,
        n_hidden: int = 150,
        n_recurrent: int = 100,
        k: int = 15,
        *,
        gradient: Literal["autograd", "direct"] = "autograd",
        init_std: float = 0.01,
        recurrent_init_std: float = 0.01,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        config = dict(
            n_visible=n_visible, n_hidden=n_hidden, n_recurrent=n_recurrent, k=k,
            gradient=gradient, init_std=init_std, recurrent_init_std=recurrent_init_std,
            seed=seed, dtype=dtype,
        )  # fmt: skip
        gen, dt = _setup(config, ("n_visible", "n_hidden", "n_recurrent", "k"))
        est = _rbm_frame(config, gen, dt, device)
        super().__init__(
            _recurrent_net(LSTMRecurrence, config, est.offset_sizes, gen, dt, device), est
        )
        self._config = config


@register_model("rtrbm")
class RTRBM(SequenceModel):
    """RTRBM (Sutskever, Hinton & Taylor 2009; BL2012 §3): ``MeanFieldRecurrence`` + ``RBMFrame``.

    The recurrent state is the RBM's own mean-field hidden vector, so there is no
    ``n_recurrent``; ``visible_offsets=False`` drops BL2012's ``W″`` (visible-bias) term.
    """

    def __init__(
        self,
        n_visible: int = 88,
        n_hidden: int = 150,
        k: int = 15,
        *,
        visible_offsets: bool = True,
        gradient: Literal["autograd", "direct"] = "autograd",
        init_std: float = 0.01,
        recurrent_init_std: float = 0.01,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        config = dict(
            n_visible=n_visible, n_hidden=n_hidden, k=k, visible_offsets=visible_offsets,
            gradient=gradient, init_std=init_std, recurrent_init_std=recurrent_init_std,
            seed=seed, dtype=dtype,
        )  # fmt: skip
        gen, dt = _setup(config, ("n_visible", "n_hidden", "k"))
        est = _rbm_frame(config, gen, dt, device)
        rec = MeanFieldRecurrence(
            est.offset_sizes,
            visible_offsets=visible_offsets,
            init_std=recurrent_init_std,
            generator=gen,
            dtype=dt,
            device=device,
        )
        super().__init__(rec, est)
        self._config = config


@register_model("rnn-nade")
class RNNNADE(SequenceModel):
    """RNN-NADE (BL2012 §4): ``RNNRecurrence`` (σ by default, as the RNN-RBM) + ``NADEFrame``,
    trained on the exact NLL.

    ``checkpoint=True`` trades compute for memory in NADE's teacher-forced pass."""

    def __init__(
        self,
        n_visible: int = 88,
        n_hidden: int = 150,
        n_recurrent: int = 100,
        *,
        activation: Literal["tanh", "sigmoid"] = "sigmoid",
        gradient: Literal["autograd", "direct"] = "autograd",
        init_std: float = 0.01,
        recurrent_init_std: float = 0.01,
        checkpoint: bool = False,
        seed: int = 0,
        dtype: str = "float32",
        device: str | torch.device | None = None,
    ) -> None:
        config = dict(
            n_visible=n_visible, n_hidden=n_hidden, n_recurrent=n_recurrent,
            activation=activation, gradient=gradient, init_std=init_std,
            recurrent_init_std=recurrent_init_std, checkpoint=checkpoint, seed=seed, dtype=dtype,
        )  # fmt: skip
        gen, dt = _setup(config, ("n_visible", "n_hidden", "n_recurrent"))
        est = NADEFrame(
            n_visible,
            n_hidden,
            init_std=init_std,
            checkpoint=checkpoint,
            generator=gen,
            dtype=dt,
            device=device,
        )
        opts = {"activation": activation, "gradient": gradient}
        super().__init__(
            _recurrent_net(RNNRecurrence, config, est.offset_sizes, gen, dt, device, **opts), est
        )
        self._config = config


SEQUENCE_MODELS: dict[str, type[SequenceModel]] = {
    "rnn-rbm": RNNRBM,
    "rtrbm": RTRBM,
    "lstm-rtrbm": LSTMRTRBM,
    "rnn-nade": RNNNADE,
}


def build_sequence_model(
    name: str,
    n_visible: int = 88,
    n_hidden: int = 150,
    n_recurrent: int | None = None,
    k: int | None = None,
    **options: Any,
) -> SequenceModel:
    """Build one of ``SEQUENCE_MODELS`` by name.

    ``n_recurrent`` (default 100) applies to the RNN/LSTM models, ``k`` (CD-k, default 15) to
    the RBM-frame models; passing one to a model that has none (``rtrbm`` has no separate
    recurrent layer, ``rnn-nade`` needs no Gibbs steps) is an error. ``options`` go to the
    class (``activation`` for the RNN models, ``gradient``, ``init_std``, ``recurrent_init_std``,
    ``seed``, ``dtype``, ``device``, ``visible_offsets`` for rtrbm, ``checkpoint`` for rnn-nade).
    """
    check_choice(name, "sequence model name", SEQUENCE_MODELS)
    kwargs: dict[str, Any] = {"n_visible": n_visible, "n_hidden": n_hidden, **options}
    for arg, value, default, unused_by in (
        ("n_recurrent", n_recurrent, 100, "rtrbm"),
        ("k", k, 15, "rnn-nade"),
    ):
        if name == unused_by:
            if value is not None:
                raise InputError(
                    error_message(
                        f"{arg} for {name!r}",
                        "None (this model has no such setting)",
                        repr(value),
                        f"drop {arg}",
                    )
                )
        else:
            kwargs[arg] = default if value is None else value
    return SEQUENCE_MODELS[name](**kwargs)


# --------------------------------------------------------------------------- training adapters
class SequenceEpochs:
    """``training.fit``'s ``Batches`` protocol over ``data.batching.SequenceBatches``.

    ``SequenceBatches`` replays epoch ``e`` from batch ``k`` with ``batches(e, start=k)``; the
    loop calls ``epoch(e, start)``. Any object with ``__len__`` and ``batches`` works.
    """

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        return self.source.batches(epoch, start)

    def take(self, epoch: int, positions: Iterable[int]) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches at ``positions`` of ``epoch`` (a data-parallel rank's share)."""
        take = getattr(self.source, "take", None)
        if take is not None:
            return take(epoch, positions)
        # A source with ``batches`` only: one replay per position, each from that batch.
        return (next(iter(self.source.batches(epoch, p))) for p in positions)


class FramePretraining(nn.Module):
    """The frame estimator of a sequence model as a stand-alone model of independent frames.

    ``loss(frames)`` is the model's ``frame_loss`` (offsets zero: a plain RBM / NADE) and
    ``parameters()`` are the estimator's only, so ``training.fit(FramePretraining(model),
    RowBatches(frames, batch_size), …)`` pretrains the shared estimator in place (BL2012 §5) and
    leaves the recurrence untouched. It is not a registered model: fit it without
    ``checkpoint_dir`` and save the sequence model afterwards.
    """

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.estimator = model.estimator
        self._frame_loss = model.frame_loss

    def loss(
        self, batch: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return self._frame_loss(batch, generator=generator)
