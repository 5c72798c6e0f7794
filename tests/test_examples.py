"""The examples run end to end with tiny settings (their real settings are in their docstrings)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_jsb_rnn_rbm_example_trains_evaluates_and_writes_midi(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = _load("jsb_rnn_rbm").main(["--tiny", "--epochs", "1", "--out", str(tmp_path)])
    assert out["epochs"] == 1 and out["nll"]["n_frames"] == 4725
    assert 0 < out["nll"]["nll"] < 88 * math.log(2)
    assert {p.suffix for p in out["paths"].values()} == {".mid", ".wav", ".png"}
    assert (tmp_path / "recipe.toml").is_file() and (tmp_path / "best.safetensors").is_file()
    assert "test NLL" in capsys.readouterr().out


def test_digits_dbm_example(tmp_path: Path) -> None:
    out = _load("digits_dbm").main(
        ["--epochs", "1", "--hidden", "6", "5", "--ais-betas", "50", "--out", str(tmp_path)]
    )
    assert -64 * math.log(2) - 1 < out["log_likelihood"] < 0
    assert Path(out["filters"]).is_file()


def test_movies_example_separates_the_two_groups() -> None:
    movies = _load("movies")
    rbm = movies.train_movie_rbm(seed=0)
    h = rbm.transform(movies.USERS)
    assert h.shape == (6, 2)
