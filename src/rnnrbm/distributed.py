"""The process group under ``torchrun``: who am I, how many are we, and the few collectives used.

``torchrun --nproc_per_node N -m rnnrbm …`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
the rendezvous variables; :func:`init_from_env` joins the group they describe (gloo on CPU,
NCCL on CUDA). Without them every function here is the single-process identity, so library code
calls them unconditionally and a one-process run does exactly what it did before.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "barrier",
    "init_from_env",
    "is_main",
    "launched_by_torchrun",
    "rank",
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
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_world_size() > 1


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
