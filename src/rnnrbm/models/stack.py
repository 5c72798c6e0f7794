"""What the deep stacks (``dbn.DBN``, ``dbm.DBM``) share: layer sizes, input checks, the training
helpers and the sampling template.

Both are stacks of Bernoulli layers ``[n_visible, n_1, …, n_L]`` (``sizes``) whose samples come
from a Gibbs chain in one core RBM followed by a read-out of the visible layer: for a DBN the top
RBM and a down-pass through the directed layers (Hinton, Osindero & Teh 2006), for a DBM the
bipartite RBM of its even and odd layers (Salakhutdinov & Hinton 2009). ``LayerStack`` runs that
chain; a subclass says where it starts, how it sweeps and how it reads ``v`` out.

``train`` imports the training loop inside the function: ``training`` sits above ``models`` in the
layer stack (the exception declared in the import-linter contract), like ``RBM.fit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnnrbm.core.rbm import GibbsState
from rnnrbm.models.rbm import Checkpointable
from rnnrbm.validation import (
    InputError,
    as_data_tensor,
    check_binary,
    check_positive_int,
    error_message,
)

__all__ = ["LayerStack", "check_unit_interval", "layer_sizes", "train", "train_greedily"]


def layer_sizes(n_visible: int, hidden: Sequence[int] | int) -> list[int]:
    """``[n_visible, n_1, …, n_L]`` from the visible size and the hidden sizes (one int or a
    non-empty list, bottom to top), each checked to be a positive integer."""
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


def check_unit_interval(x: Tensor, name: str) -> Tensor:
    """``x`` unchanged if every value is in ``[0, 1]`` (training data may be grey levels)."""
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


def train(
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
    """Run THE training loop on the rows of ``data`` (``options``: the other ``TrainConfig``
    fields); returns its ``FitResult``."""
    from rnnrbm.training import RowBatches, TrainConfig, fit

    batch_size = check_positive_int(batch_size, "batch_size")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, **options)
    return fit(model, RowBatches(data, batch_size, seed=seed), valid, config, callbacks)


def train_greedily(
    layers: Sequence[nn.Module],
    x: Tensor,
    up: Callable[[Tensor, int], Tensor],
    *,
    seed: int,
    **train_options: Any,
) -> list[Any]:
    """Greedy layer-wise training (Hinton et al. 2006): ``layers[i]`` through ``train`` on the
    rows ``x`` passed up through the layers below it (``up(x, i)`` maps the input of layer ``i``
    to its output, without gradient), shuffled with ``seed + i``. Returns the ``FitResult``s."""
    results = []
    for i, layer in enumerate(layers):
        results.append(train(layer, x, seed=seed + i, **train_options))
        with torch.no_grad():
            x = up(x, i)
    return results


class LayerStack(Checkpointable, nn.Module):
    """Base of ``DBN`` and ``DBM``: ``sizes``, config, checkpoints, input checks, sampling.

    A subclass sets ``sizes`` and ``_config`` and implements ``_anchor`` (a parameter whose
    dtype and device inputs follow) and the four sampling hooks ``_chain_from``,
    ``_chain_width``, ``_sweeps`` and ``_read_visible``."""

    sizes: list[int]

    @property
    def n_visible(self) -> int:
        return self.sizes[0]

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def _anchor(self) -> Tensor:
        raise NotImplementedError

    def _data(self, x: Any, name: str = "X", *, binary: bool = False) -> Tensor:
        """``x`` as a ``(N, n_visible)`` tensor in the model's dtype and device, binary or in
        ``[0, 1]``."""
        t = as_data_tensor(
            x, name, n_features=self.n_visible, dtype=self._anchor.dtype, device=self.device
        )
        return check_binary(t, name) if binary else check_unit_interval(t, name)

    # ----------------------------------------------------------------- sampling hooks
    def _chain_from(self, v: Tensor) -> Tensor:
        """The chain state that starts from the (checked) data rows ``v``."""
        raise NotImplementedError

    @property
    def _chain_width(self) -> int:
        """Units in one chain state."""
        raise NotImplementedError

    def _sweeps(self, x: Tensor, steps: int, generator: torch.Generator | None) -> GibbsState:
        """``steps`` Gibbs sweeps of the chain from state ``x``."""
        raise NotImplementedError

    def _read_visible(
        self, state: GibbsState, generator: torch.Generator | None, mean: bool
    ) -> Tensor:
        """Visible rows ``(N, n_visible)`` of a chain state: samples, or means when ``mean``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- sampling
    def _chain_start(self, n: int | None, start: Any, generator: torch.Generator | None) -> Tensor:
        """The chain state of ``start``'s rows, or ``n`` rows of uniform random bits."""
        if start is not None:
            return self._chain_from(self._data(start, "start"))
        like = self._anchor
        u = torch.rand(
            (check_positive_int(n, "n"), self._chain_width),
            generator=generator,
            dtype=like.dtype,
            device=like.device,
        )
        return (u < 0.5).to(like.dtype)

    def sample(
        self,
        n: int | None = None,
        steps: int = 1000,
        generator: torch.Generator | None = None,
        *,
        start: Any = None,
        mean: bool = False,
    ) -> Tensor:
        """Visible samples ``(n, n_visible)`` after ``steps`` Gibbs sweeps from uniform random
        bits (or from ``start``'s rows: the DBN's up-pass, the DBM's mean-field posterior), read
        out as draws or, with ``mean=True``, as the visible means ``E[v | h¹]``. DBN: Gibbs in
        the top RBM then a down-pass; DBM: alternating odd/even-layer Gibbs."""
        with torch.no_grad():
            x = self._chain_start(n, start, generator)
            state = self._sweeps(x, check_positive_int(steps, "steps"), generator)
            return self._read_visible(state, generator, mean)

    def sample_chains(
        self,
        start: Any,
        n_rows: int = 10,
        steps_per_row: int = 100,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Persistent chains for pictures: ``(n_rows, N, n_visible)``; row 0 is ``start`` and
        row ``r`` the visible means ``E[v | h¹]`` after ``r · steps_per_row`` sweeps (the chain
        state persists from row to row; a DBN reads each row out by a fresh down-pass)."""
        check_positive_int(n_rows, "n_rows")
        steps = check_positive_int(steps_per_row, "steps_per_row")
        with torch.no_grad():
            v0 = self._data(start, "start")
            x = self._chain_start(None, v0, generator)
            rows = [v0]
            for _ in range(n_rows - 1):
                state = self._sweeps(x, steps, generator)
                x = state.v
                rows.append(self._read_visible(state, generator, mean=True))
            return torch.stack(rows)
