"""``recipes.run``: the paper's stages through the one loop, early stopping on the best epoch,
self-describing checkpoints, exact resumption, and the old ``train_sequence_model`` reproduced."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rnnrbm.checkpoint import load_checkpoint
from rnnrbm.data.batching import pad_sequences
from rnnrbm.data.music_data import MusicData
from rnnrbm.data.polyphonic import PolyphonicDataset, load_bundled_jsb
from rnnrbm.models import RBM
from rnnrbm.models.sequence import RNNRBM, build_sequence_model
from rnnrbm.music.pianoroll import LOWEST_PITCH, N_KEYS
from rnnrbm.recipes import Recipe, RunResult, run
from rnnrbm.validation import InputError, InputTypeError
from toy_sequences import N_V, toy_dataset


def _data(ds: PolyphonicDataset | None = None) -> MusicData:
    return MusicData(toy_dataset() if ds is None else ds, "benchmark", 1, True)


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in more.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _recipe(**sections: Any) -> Recipe:
    """A tiny recipe (6 hidden, 5 recurrent units; 12 visible from the toy data's width) with
    ``sections`` merged in, e.g. ``_recipe(stages={"sequence": {"epochs": 2}})``."""
    base = {
        "data": {"source": "memory"},
        "model": {"hidden": 6, "recurrent": 5, "k": 1},
        "stages": {"frames": {"epochs": 0}, "sequence": {"epochs": 2, "batch_size": 4}},
    }
    return Recipe.from_dict(_merge(base, sections))


def _state(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- the stages
def test_run_trains_the_three_stages_and_logs_validation() -> None:
    recipe = _recipe(
        model={"k": 2},
        stages={"frames": {"epochs": 1}, "rnn": {"epochs": 1},
                "sequence": {"epochs": 3, "lr": 1e-2}},
        validation={"every": 1, "patience": 0},
    )  # fmt: skip
    result = run(recipe, data=_data())
    model = result.model
    assert isinstance(result, RunResult) and isinstance(model, RNNRBM)
    assert model.estimator.k == 2 and model.n_visible == N_V
    assert set(result.timings) == {"frames", "rnn", "sequence", "total"}
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0] and result.epochs == 3
    assert all("valid_nll" in h and "train_loss" in h for h in result.history)
    assert result.monitor == "valid_nll"
    assert result.valid_estimator == "exact"  # a 6-unit hidden layer
    assert result.best_epoch == result.train.state.best_epoch is not None
    assert [e for e, _ in result.epoch_seconds] == [1, 2, 3]
    assert result.best is result.last is result.recipe_path is None  # no out: nothing written


def test_validation_can_choose_the_epoch_by_the_conservative_bound() -> None:
    settings = {"every": 1, "patience": 0, "ais_runs": 2, "ais_betas": 5}
    exact, forward, reverse = (
        run(_recipe(validation={**settings, "method": m}), data=_data())
        for m in ("auto", "ais", "raise")
    )
    assert exact.valid_estimator == "exact"  # 6 hidden units: auto enumerates
    assert forward.valid_estimator.startswith("ais(runs=2, betas=5")
    assert reverse.valid_estimator.startswith("raise(runs=2, betas=5")
    # Validation does not steer training here, so the runs hold the same weights at every
    # epoch and differ only in the estimate, which stays near the exact value (the model is
    # still close to the AIS base after 2 epochs).
    assert _same(_state(exact.model), _state(reverse.model))
    nll = [[h["valid_nll"] for h in r.history] for r in (exact, forward, reverse)]
    assert nll[2] != nll[1] and nll[2] == pytest.approx(nll[0], abs=0.01)


def test_run_attaches_nothing_to_the_model() -> None:
    recipe = _recipe(stages={"frames": {"epochs": 1}, "rnn": {"epochs": 1}})
    result = run(recipe, data=_data())
    fresh = build_sequence_model("rnn-rbm", n_visible=N_V, n_hidden=6, n_recurrent=5, k=1)
    # The monitor is passed to fit, not set on the model: validate is the class's, and the
    # model holds exactly the attributes a freshly built one holds (no recipe_log_).
    assert "validate" not in vars(result.model)
    assert not hasattr(result.model, "recipe_log_")
    assert set(vars(result.model)) == set(vars(fresh))
    assert result.model.config() == fresh.config()


def test_run_is_seeded() -> None:
    data = _data()
    recipe = _recipe(stages={"frames": {"epochs": 1}, "sequence": {"lr": 5e-3}}, seed=3)
    a = run(recipe, data=data).model
    b = run(recipe, data=data).model
    c = run(recipe.override({"seed": 4}), data=data).model
    assert _same(_state(a), _state(b))
    sa, sc = _state(a), _state(c)
    assert sa.keys() == sc.keys() and not any(torch.equal(sa[k], sc[k]) for k in sa)


def test_rnn_nade_run_improves_valid_nll() -> None:
    recipe = _recipe(
        model={"type": "rnn-nade"},
        stages={"frames": {"epochs": 2}, "sequence": {"epochs": 15, "lr": 2e-2}},
        validation={"patience": 0},
    )
    nll = [h["valid_nll"] for h in run(recipe, data=_data()).history]
    assert len(nll) == 15 and nll[-1] < nll[0] - 0.5


def test_time_budget_stops_after_the_first_epoch() -> None:
    recipe = _recipe(stages={"sequence": {"epochs": 50, "time_budget": 1e-6}})
    result = run(recipe, data=_data())
    assert result.train.state.epoch == 1 and result.train.state.stopped_early


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    # Validation pieces run backwards in time (each frame shifted down one key, not up): once
    # the model learns the training direction the validation NLL turns up, for any seed
    # (checked 0-3), rather than by luck of one random stream.
    train = toy_dataset()
    valid = [np.ascontiguousarray(p[::-1]) for p in train["valid"]]
    ds = PolyphonicDataset("toy", "memory", {"train": train["train"], "valid": valid})
    recipe = _recipe(
        stages={"sequence": {"epochs": 30, "lr": 0.3, "optimizer": "sgd", "clip_grad_norm": 0}},
        validation={"patience": 2},
    )
    result = run(recipe, tmp_path, data=_data(ds))
    hist = [h["valid_nll"] for h in result.history]
    best = int(np.argmin(hist))
    assert result.train.state.stopped_early and len(hist) < 30 and best < len(hist) - 1
    assert result.best_epoch == result.train.state.best_epoch == best + 1
    model = result.model
    final = model.validate(pad_sequences(ds["valid"]))["nll_per_frame"]  # exact: 6 hidden units
    assert final == pytest.approx(hist[best], abs=1e-5)
    # best.safetensors holds the restored weights; last.safetensors the last epoch's.
    assert result.best is not None and result.last is not None
    assert _same(load_checkpoint(result.best).model.state_dict(), _state(model))
    assert load_checkpoint(result.last).train_state["epoch"] == len(hist)  # type: ignore[index]


def test_weight_decay_shrinks_the_weight_matrices() -> None:
    ds = toy_dataset()
    train_only = PolyphonicDataset("toy", "memory", {"train": ds["train"]})  # last epoch kept

    def trained(decay: float) -> dict[str, torch.Tensor]:
        recipe = _recipe(
            model={"type": "rnn-nade"},
            stages={"sequence": {"lr": 0.1, "optimizer": "sgd", "weight_decay": decay}},
        )
        result = run(recipe, data=_data(train_only))
        assert result.monitor is None and result.best_epoch is None
        return _state(result.model)

    plain, decayed = trained(0.0), trained(1.0)
    matrices = [k for k, v in plain.items() if v.dim() == 2]
    assert matrices and all(decayed[k].norm() < plain[k].norm() for k in matrices)


def test_a_plain_rbm_trains_on_frames_monitored_by_pseudo_likelihood() -> None:
    recipe = _recipe(
        model={"type": "rbm"}, stages={"sequence": {"epochs": 3, "batch_size": 10, "lr": 1e-2}}
    )
    result = run(recipe, data=_data())
    assert isinstance(result.model, RBM) and result.model.n_visible == N_V
    assert result.monitor == "neg_pseudo_loglik" and result.valid_estimator == "pseudo-likelihood"
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert all(np.isfinite(h["neg_pseudo_loglik"]) for h in result.history)
    assert result.best_epoch == result.train.state.best_epoch is not None


# ----------------------------------------------------------------------------- the run folder
def test_run_writes_the_recipe_and_self_describing_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = _recipe(stages={"frames": {"epochs": 1}}, data={"tempo_bpm": 90.0})
    result = run(recipe, out, data=_data())
    assert result.recipe_path == out / "recipe.toml"
    assert result.last == out / "last.safetensors" and result.best == out / "best.safetensors"
    assert set(_files(out)) == {"recipe.toml", "last.safetensors", "best.safetensors"}
    assert Recipe.from_toml(out / "recipe.toml") == result.recipe == recipe
    framing = {
        "dataset": "toy",
        "source": "memory",
        "kind": "benchmark",
        "frames_per_beat": 1,
        "tempo_bpm": 90.0,
        "transpose_to_c": True,
        "sustain": False,
        "lowest_key": LOWEST_PITCH,
        "keys": N_KEYS,
    }
    assert result.framing == framing
    for path in (result.best, result.last):
        ck = load_checkpoint(path)
        assert ck.recipe == result.recipe.to_dict() and ck.framing == framing
        assert Recipe.from_dict(ck.recipe) == result.recipe
    assert _same(load_checkpoint(result.best).model.state_dict(), _state(result.model))


@pytest.mark.parametrize("every", [10, 0])
def test_a_run_that_never_validated_names_its_last_epoch_best(tmp_path: Path, every: int) -> None:
    """Validation every 10 epochs with 3 trained, or none (``every = 0``): the run's choice is
    its last epoch, and best.safetensors holds it (what ``rnnrbm evaluate RUN/best.safetensors``
    reads)."""
    recipe = _recipe(stages={"sequence": {"epochs": 3}}, validation={"every": every})
    result = run(recipe, tmp_path / "run", data=_data())
    assert all("valid_nll" not in h for h in result.history)
    assert result.best == tmp_path / "run" / "best.safetensors"
    assert result.best.read_bytes() == result.last.read_bytes()  # type: ignore[union-attr]
    assert _same(load_checkpoint(result.best).model.state_dict(), _state(result.model))


def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    data = _data()
    recipe = _recipe(
        stages={"frames": {"epochs": 1}, "rnn": {"epochs": 1}, "sequence": {"epochs": 4}},
        validation={"every": 1},
    )
    whole = run(recipe, tmp_path / "whole", data=data)
    first = run(recipe.override({"stages.sequence.epochs": 2}), tmp_path / "cut", data=data)
    assert first.epochs == 2
    resumed = run(recipe, tmp_path / "cut", resume=True, data=data)
    assert resumed.epochs == 4 and "frames" not in resumed.timings  # pretraining not repeated
    assert resumed.history == whole.history
    assert resumed.best_epoch == whole.best_epoch
    assert _same(_state(resumed.model), _state(whole.model))
    for name in ("last.safetensors", "best.safetensors"):
        a = load_checkpoint(tmp_path / "cut" / name).model.state_dict()
        b = load_checkpoint(tmp_path / "whole" / name).model.state_dict()
        assert _same(a, b), name
    assert Recipe.from_toml(tmp_path / "cut" / "recipe.toml") == recipe


def test_validation_every_n_epochs_counts_epochs_across_a_resume(tmp_path: Path) -> None:
    data = _data()
    recipe = _recipe(stages={"sequence": {"epochs": 6}}, validation={"every": 2})
    whole = run(recipe, tmp_path / "whole", data=data)
    checked = [h["epoch"] for h in whole.history if "valid_nll" in h]
    assert checked == [2.0, 4.0, 6.0]
    run(recipe.override({"stages.sequence.epochs": 3}), tmp_path / "cut", data=data)
    resumed = run(recipe, tmp_path / "cut", resume=True, data=data)
    assert resumed.history == whole.history  # epochs 4 and 6 checked, not 5
    assert _same(_state(resumed.model), _state(whole.model))


def test_a_plain_rbm_validates_every_n_epochs() -> None:
    recipe = _recipe(
        model={"type": "rbm"}, stages={"sequence": {"epochs": 4, "batch_size": 10}},
        validation={"every": 2},
    )  # fmt: skip
    result = run(recipe, data=_data())
    assert [h["epoch"] for h in result.history if "neg_pseudo_loglik" in h] == [2.0, 4.0]
    none = run(recipe.override({"validation.every": 0}), data=_data())
    assert [h["epoch"] for h in none.history] == [1.0, 2.0, 3.0, 4.0]
    assert all("neg_pseudo_loglik" not in h for h in none.history) and none.best_epoch is None


def test_a_resumed_run_restores_a_best_epoch_from_before_the_resume(tmp_path: Path) -> None:
    # Reversed validation pieces (see test_early_stopping_restores_the_best_epoch): the best
    # epoch comes before the last, so a run cut right after it and resumed never sees a new
    # best; its weights must come from best.safetensors, as the uninterrupted run's do.
    train = toy_dataset()
    valid = [np.ascontiguousarray(p[::-1]) for p in train["valid"]]
    data = _data(PolyphonicDataset("toy", "memory", {"train": train["train"], "valid": valid}))
    recipe = _recipe(
        stages={"sequence": {"epochs": 12, "lr": 0.3, "optimizer": "sgd", "clip_grad_norm": 0}}
    )
    whole = run(recipe, tmp_path / "whole", data=data)
    assert whole.best_epoch is not None and whole.best_epoch < whole.epochs
    cut = recipe.override({"stages.sequence.epochs": whole.best_epoch})
    run(cut, tmp_path / "cut", data=data)
    resumed = run(recipe, tmp_path / "cut", resume=True, data=data)
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    assert _same(_state(resumed.model), _state(whole.model))
    last = load_checkpoint(tmp_path / "cut" / "last.safetensors").model.state_dict()
    assert not _same(_state(resumed.model), last)  # the best epoch's, not the last one's


def test_resuming_with_another_setting_names_the_key(tmp_path: Path) -> None:
    data = _data()
    recipe = _recipe()
    run(recipe, tmp_path, data=data)
    before = _files(tmp_path)
    with pytest.raises(InputError, match=r"resume: stages\.sequence\.lr\b"):
        run(recipe.override({"stages.sequence.lr": 5e-3}), tmp_path, resume=True, data=data)
    with pytest.raises(InputError, match=r"resume: model\.hidden\b"):
        run(recipe.override({"model.hidden": 7}), tmp_path, resume=True, data=data)
    assert _files(tmp_path) == before  # refused before anything was written
    # More epochs and a time budget may change: the run continues.
    longer = recipe.override({"stages.sequence.epochs": 3, "stages.sequence.time_budget": 600})
    assert run(longer, tmp_path, resume=True, data=data).epochs == 3


def test_a_folder_that_holds_a_run_is_not_overwritten(tmp_path: Path) -> None:
    data = _data()
    run(_recipe(), tmp_path, data=data)
    before = _files(tmp_path)
    with pytest.raises(InputError, match=r"an existing run .*resume it, or choose another"):
        run(_recipe(seed=1), tmp_path, data=data)
    assert _files(tmp_path) == before


def test_run_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"model\.type: expected one of"):
        Recipe.from_dict({"model": {"type": "rnn-dbn"}})
    with pytest.raises(InputError, match=r"stages\.sequence\.time_budget: expected a number > 0"):
        _recipe(stages={"sequence": {"time_budget": -1.0}})
    with pytest.raises(InputError, match=r"resume: expected a checkpoint"):
        run(_recipe(), tmp_path / "none", resume=True, data=_data())
    with pytest.raises(InputError, match=r"resume: expected a checkpoint"):
        run(_recipe(), None, resume=True, data=_data())
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"out .*file: expected a folder"):
        run(_recipe(), tmp_path / "file", data=_data())
    with pytest.raises(InputTypeError, match=r"data: expected a MusicData"):
        run(_recipe(), data=toy_dataset())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- regression
# The old ``recipes.train_sequence_model`` (git 96a243a) on the first 12 / 4 training /
# validation chorales of the bundled JSB subset, rnn-rbm with 12 hidden and 8 recurrent units,
# one thread; the float64 sums of its parameters. The runner must reproduce them bit for bit.
OLD_RNN_RBM_SUMS = {
    "recurrence.u0": 0.08139346586540341,
    "recurrence.rnn.weight_ih_l0": 3.140226893054205,
    "recurrence.rnn.weight_hh_l0": 0.6840846312697977,
    "recurrence.rnn.bias_ih_l0": 0.08405557740479708,
    "recurrence.rnn.bias_hh_l0": 0.08405557554215193,
    "recurrence.out.weight": -7.8968022365588695,
    "estimator.W": -80.91134562599473,
    "estimator.b_v": -8.5584746748209,
    "estimator.b_h": 0.9733765423297882,
}
OLD_RNN_RBM_VALID_NLL = [49.249457238872324, 48.510688943343936, 47.761228659043574]


def test_the_runner_reproduces_the_old_train_sequence_model_exactly() -> None:
    jsb = load_bundled_jsb()
    splits = {"train": jsb["train"][:12], "valid": jsb["valid"][:4], "test": jsb["test"][:4]}
    data = MusicData(PolyphonicDataset(jsb.name, jsb.source, splits), "benchmark", 1, True)
    recipe = Recipe.from_dict(
        {
            "threads": 1,
            "model": {"type": "rnn-rbm", "hidden": 12, "recurrent": 8, "k": 3},
            "stages": {
                "frames": {"epochs": 1, "k": 1},
                "rnn": {"epochs": 1},
                "sequence": {"epochs": 3, "batch_size": 4, "lr": 1e-3, "weight_decay": 1e-4,
                             "lr_decay": 0.5, "lr_patience": 1},
            },
            "validation": {"every": 1, "ais_runs": 2, "ais_betas": 20, "frames": 200,
                           "patience": 3},
        }
    )  # fmt: skip
    result = run(recipe, data=data)
    sums = {k: float(v.double().sum()) for k, v in result.model.state_dict().items()}
    assert sums == OLD_RNN_RBM_SUMS  # tolerance 0
    assert [h["valid_nll"] for h in result.history] == OLD_RNN_RBM_VALID_NLL


def test_the_recipe_chooses_autograds_or_the_written_out_gradient() -> None:
    from rnnrbm.recipes.runner import build_model

    for gradient in ("autograd", "direct"):
        for kind in ("rnn-rbm", "rnn-nade", "rtrbm", "lstm-rtrbm"):
            recipe = Recipe.from_dict({"model": {"type": kind, "gradient": gradient}})
            model = build_model(recipe, N_V, torch.device("cpu"))
            assert model.config()["gradient"] == gradient
            if kind != "rnn-nade":
                assert model.estimator.gradient == gradient
            if kind in ("rnn-rbm", "rnn-nade"):
                assert model.recurrence.gradient == gradient
