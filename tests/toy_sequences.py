"""A toy dataset of structured sequences, shared by the recipe tests (importable: tests/ is on
pytest's ``pythonpath``)."""

from __future__ import annotations

import numpy as np

from rnnrbm.data.polyphonic import PolyphonicDataset

N_V = 12


def toy_dataset(seed: int = 0, n_v: int = N_V) -> PolyphonicDataset:
    """Sequences with structure: each frame is the previous one shifted by one key."""
    rng = np.random.default_rng(seed)

    def piece(T: int) -> np.ndarray:
        first = rng.random(n_v) < 0.3
        return np.stack([np.roll(first, t) for t in range(T)])

    splits = {
        "train": [piece(int(T)) for T in rng.integers(3, 9, 12)],
        "valid": [piece(int(T)) for T in rng.integers(3, 9, 4)],
    }
    return PolyphonicDataset("toy", "memory", splits)
