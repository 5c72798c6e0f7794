"""The process group under ``torchrun``: who am I, how many are we, and the few collectives used.

``torchrun --nproc_per_node N -m rnnrbm …`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous variables; :func:`init_from_env` joins the group they describe (gloo on CPU,
NCCL on CUDA). Without them every function here is the single-process identity, so library code
calls them unconditionally and a one-process run does exactly what it did before.

How ``training.fit`` uses these (sharded batches, one all-reduce of the gradients per step,
rank 0's validation figures decide, rank 0 writes): docs/design.md §11.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

__all__ = [
    "all_gather_objects",
    "all_reduce_sum_",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "first_mismatch",
    "init_from_env",
    "is_main",
    "launched_by_torchrun",
    "local_device",
    "rank",
    "shutdown",
    "world_size",
]


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (``WORLD_SIZE`` set by torchrun)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_env(device: torch.device | str = "cpu") -> bool:
    """Join the process group torchrun described, once; False when not launched by torchrun.

    The backend follows the device: NCCL for CUDA (each rank takes ``cuda:LOCAL_RANK``), gloo
    otherwise. Returns True when a group of more than one process is active afterwards.
    """
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl" if cuda else "gloo"
        _import_before_the_group()
        store = _attempt_store()
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
    return dist.get_world_size() > 1


def _import_before_the_group() -> None:
    """Import ``torch._dynamo`` (and the ~800 modules it pulls in) before the group exists.

    The first optimiser imports it lazily; imported after ``init_process_group``, some of those
    modules keep the default group in default arguments, so ``destroy_process_group`` cannot
    free it and its gloo worker threads live on into interpreter finalisation. A worker that
    then releases a finished collective's tensors needs the GIL, cannot take it, and the rank
    aborts (SIGABRT, "terminate called without an active exception") after its work is done.
    Imported first, those defaults are None and :func:`shutdown` joins the threads.
    """
    import torch._dynamo  # noqa: F401


def _attempt_store() -> dist.Store | None:
    """The store of this attempt of the group when torchrun's agent hosts the store, else None
    (``init_process_group`` then builds its own from ``MASTER_ADDR``/``MASTER_PORT``).

    The agent keeps one store for all the restarts of ``--max-restarts``, and the group's keys
    carry no attempt in their names: a restarted rank could read a dead peer's address and fail
    ("Gloo connectFullMesh failed … Connection refused") or hang. Prefixing the keys with
    ``TORCHELASTIC_RESTART_COUNT`` (the same on every rank of an attempt) gives each attempt
    fresh keys.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        int(os.environ["WORLD_SIZE"]),
        is_master=False,
        timeout=default_pg_timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"rnnrbm/attempt-{attempt}/", store)


def local_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA device under torchrun (one GPU per
    process, as NCCL requires), ``device`` otherwise."""
    if device.type != "cuda" or not launched_by_torchrun():
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    """Leave the process group (a no-op without one): NCCL warns about a group never destroyed."""
    if _active():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """Rank 0 alone writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if _active() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in one process); picklable, trusted peers."""
    if not _active() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten_into(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view(t.shape))
        offset += n


def all_reduce_sum_(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its sum over the ranks, in place (a no-op in one process).

    One collective over one flat buffer (same device; the common dtype by promotion): one message
    per training step instead of one per parameter, the cost that dominates small models.
    """
    if not _active() or dist.get_world_size() == 1 or not tensors:
        return
    flat = _flat(tensors)
    dist.all_reduce(flat)
    _unflatten_into(flat, tensors)


def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor in place with rank ``src``'s (one flat message; no-op in one
    process)."""
    if not _active() or dist.get_world_size() == 1 or not tensors:
        return
    flat = _flat(tensors)
    dist.broadcast(flat, src)
    _unflatten_into(flat, tensors)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process); picklable."""
    if not _active() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def first_mismatch(fields: Mapping[str, Any]) -> tuple[str, int, Any, Any] | None:
    """The first key (in rank 0's order) whose value differs between rank 0 and another rank:
    ``(key, rank, rank 0's value, that rank's value)``; None when every rank agrees (always in
    one process). A collective: every rank must call it, and every rank gets the same answer."""
    gathered = all_gather_objects(dict(fields))
    reference = gathered[0]
    for key in list(reference) + [k for g in gathered[1:] for k in g if k not in reference]:
        for r, other in enumerate(gathered[1:], start=1):
            if other.get(key, _MISSING) != reference.get(key, _MISSING):
                return key, r, reference.get(key, _MISSING), other.get(key, _MISSING)
    return None


class _Missing:
    """A key one rank lacks (a singleton per process: compared by identity)."""

    def __repr__(self) -> str:
        return "<no such key>"


_MISSING = _Missing()
