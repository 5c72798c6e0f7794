"""Shared fixtures: brute-force oracles independent of the library, and the shared data path."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "polyphonic"


def all_binary_states(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Every vector of {0,1}^n, shape (2**n, n), in lexicographic order."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=dtype).reshape(-1, n)


def brute_joint_log_z(W: torch.Tensor, b_v: torch.Tensor, b_h: torch.Tensor) -> float:
    """log Σ_{v,h} exp(v·b_v + h·b_h + vᵀWh) by full enumeration of both layers (float64)."""
    W, b_v, b_h = W.double(), b_v.double(), b_h.double()
    V = all_binary_states(W.shape[0])
    H = all_binary_states(W.shape[1])
    neg_e = (V @ b_v)[:, None] + (H @ b_h)[None, :] + V @ W @ H.T
    return float(torch.logsumexp(neg_e.flatten(), 0))


@pytest.fixture
def oracle():
    """Namespace of brute-force helpers for tests."""

    class _Oracle:
        states = staticmethod(all_binary_states)
        joint_log_z = staticmethod(brute_joint_log_z)
        log_sqrt_2pi = 0.5 * math.log(2 * math.pi)

    return _Oracle


@pytest.fixture
def shared_data() -> Path:
    """../shared/data/polyphonic beside the checkout; tests needing it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
