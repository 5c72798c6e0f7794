"""Boundary checks: one message template for choices and dtype names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnrbm.validation import InputError, check_choice, parse_dtype


def test_check_choice_returns_the_choice_or_names_them_all():
    assert check_choice("pcd", "method", ("cd", "pcd")) == "pcd"
    assert check_choice("b", "key", {"a": 1, "b": 2}) == "b"  # a mapping's keys
    with pytest.raises(InputError, match=r"^method: expected 'cd' or 'pcd', got 'sgd'\. Fix: pick"):
        check_choice("sgd", "method", ("cd", "pcd"))
    with pytest.raises(InputError, match=r"synth: expected 'a', 'b' or 'c', got 3\."):
        check_choice(3, "synth", ("a", "b", "c"))
    with pytest.raises(InputError, match=r"expected 'only', got"):
        check_choice(np.zeros(2), "x", ("only",))  # never an ambiguous array comparison


def test_parse_dtype_names_the_two_float_types():
    assert parse_dtype("float32") is torch.float32
    assert parse_dtype("float64") is torch.float64
    for bad in ("float16", "int64", "double", torch.float64, None):
        with pytest.raises(InputError, match=r"dtype: expected 'float32' or 'float64'"):
            parse_dtype(bad)
