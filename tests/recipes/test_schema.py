"""The recipe tree: every bundled recipe loads, TOML round-trips, bad input names its key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rnnrbm.recipes import Recipe, bundled_names, default_recipe, load
from rnnrbm.validation import InputError, InputTypeError

ROWS = (  # one bundled recipe per published results row, plus the demo and a plain RBM
    "demo",
    "jsb-lstm-rtrbm",
    "jsb-rbm",
    "jsb-rnn-nade",
    "jsb-rnn-rbm",
    "jsb-rnn-rbm-minute",
    "jsb-rtrbm",
    "musedata-rnn-nade",
    "musedata-rnn-rbm",
    "nottingham-rnn-nade",
    "nottingham-rnn-rbm",
    "piano-midi-rnn-nade",
    "piano-midi-rnn-rbm",
)
UNMEASURED = {"jsb-rbm"}  # recipes without a measured figure


def test_every_bundled_recipe_loads_and_round_trips_through_toml(tmp_path: Path) -> None:
    assert set(ROWS) == set(bundled_names())
    for name in bundled_names():
        recipe = load(name)
        assert recipe.name == name
        path = tmp_path / f"{name}.toml"
        path.write_text(recipe.to_toml())
        assert Recipe.from_toml(path) == recipe
        assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_bundled_rows_carry_their_measured_figure() -> None:
    for name in ROWS:
        if name not in UNMEASURED:
            expected = load(name).expected
            assert expected.test_nll > 0 and expected.estimator and expected.measured


def test_the_jsb_rnn_rbm_recipe_holds_the_settings_of_its_row() -> None:
    r = load("jsb-rnn-rbm")
    assert (r.model.type, r.model.hidden, r.model.recurrent, r.model.k) == ("rnn-rbm", 150, 100, 15)
    seq = r.stages.sequence
    assert (seq.lr, seq.batch_size, seq.weight_decay, seq.lr_decay, seq.epochs) == (
        3e-3, 8, 1e-4, 0.5, 400,
    )  # fmt: skip
    assert (r.validation.every, r.validation.patience, r.validation.frames) == (5, 6, 1500)
    assert (r.evaluation.ais_runs, r.evaluation.ais_betas) == (100, 1000)


def test_the_jsb_rtrbm_recipes_share_the_plateau_rule_chosen_on_validation() -> None:
    rtrbm, lstm = load("jsb-rtrbm"), load("jsb-lstm-rtrbm")
    assert (rtrbm.stages.sequence.lr_patience, rtrbm.validation.patience) == (2, 6)
    # The LSTM-RTRBM trains with the RTRBM's recipe: only the model differs.
    assert (lstm.stages, lstm.validation, lstm.evaluation) == (
        rtrbm.stages, rtrbm.validation, rtrbm.evaluation,
    )  # fmt: skip
    assert (lstm.model.type, rtrbm.model.type) == ("lstm-rtrbm", "rtrbm")


def test_int_is_accepted_for_a_float_setting_but_not_the_reverse() -> None:
    r = Recipe.from_dict({"stages": {"sequence": {"lr": 1}}})
    assert r.stages.sequence.lr == 1.0 and isinstance(r.stages.sequence.lr, float)
    with pytest.raises(InputTypeError, match=r"stages\.sequence\.epochs: expected an integer"):
        Recipe.from_dict({"stages": {"sequence": {"epochs": 2.5}}})
    with pytest.raises(InputTypeError, match=r"data\.carry_state: expected true or false"):
        Recipe.from_dict({"data": {"carry_state": 1}})


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"stages": {"sequence": {"lr": 0}}}, r"stages\.sequence\.lr: expected a number > 0"),
        ({"stages": {"sequence": {"lr_decay": 1.0}}}, r"lr_decay: expected a number > 0 and < 1"),
        ({"validation": {"ais_betas": 1}}, r"validation\.ais_betas: expected an integer ≥ 2"),
        ({"validation": {"every": -1}}, r"validation\.every: expected an integer ≥ 1 \(0: none\)"),
        ({"model": {"type": "gru"}}, r"model\.type: expected one of 'rnn-rbm'"),
        ({"model": {"hidden": 0}}, r"model\.hidden: expected an integer ≥ 1"),
        ({"data": {"max_len": 1}}, r"data\.max_len: expected an integer ≥ 2 \(0: none\)"),
        ({"model": {"type": "rtrbm", "activation": "tanh"}}, r"model\.activation"),
        (
            {"model": {"type": "rbm", "gradient": "direct"}},
            r"model\.gradient: expected 'autograd'",
        ),
        ({"model": {"gradient": "fast"}}, r"model\.gradient: expected one of 'autograd'"),
        (
            {"stages": {"sequence": {"lr_schedule": "cosine", "lr_decay": 0.5}}},
            r"stages\.sequence\.lr_decay: expected 0 beside lr_schedule = 'cosine'",
        ),
        ({"stages": {"sequence": {"lr_schedule": "step"}}}, r"lr_schedule: expected one of"),
        ({"validation": {"method": "exact"}}, r"validation\.method: expected one of 'auto'"),
        ({"stages": {"sequence": {"lr_final": 2}}}, r"lr_final: expected a number ≥ 0 and ≤ 1"),
        ({"stages": {"sequence": {"lr_rate": 1}}}, r"stages\.sequence\.lr_rate: .*unknown key"),
        ({"stagez": {}}, r"stagez: expected a known key \(name, description"),
    ],
)
def test_bad_values_name_the_key_path_the_range_and_the_fix(data: dict, pattern: str) -> None:
    with pytest.raises((InputError, InputTypeError), match=pattern) as info:
        Recipe.from_dict(data, where="my.toml")
    assert str(info.value).startswith("my.toml: ") and "Fix: " in str(info.value)


def test_override_accepts_mappings_and_key_value_strings() -> None:
    r = load("jsb-rnn-rbm")
    a = r.override({"stages.sequence.epochs": 3, "model.hidden": 20})
    b = r.override(["stages.sequence.epochs=3", "model.hidden=20"])
    assert a == b and a.stages.sequence.epochs == 3 and a.model.hidden == 20
    assert r.override(["data.source=nottingham"]).data.source == "nottingham"  # a bare word
    assert r.override(["data.source='x y'"]).data.source == "x y"
    assert dataclasses.replace(r, name="x") != r  # frozen, compared by value
    with pytest.raises(InputError, match=r"stages\.sequence\.epoch: .*unknown key"):
        r.override(["stages.sequence.epoch=3"])
    with pytest.raises(InputError, match=r"stages\.seq: .*unknown key"):
        r.override(["stages.seq.epochs=3"])
    with pytest.raises(InputError, match=r"--set: expected KEY=VALUE"):
        r.override(["stages.sequence.epochs"])
    with pytest.raises(InputError, match=r"stages: .*unknown key"):
        r.override({"stages": 3})


def test_a_broken_toml_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(InputError, match=r"bad\.toml: expected valid TOML"):
        Recipe.from_toml(bad)
    bad.write_text('[model]\ntype = "rnn-rbm"\nhiden = 3\n')
    with pytest.raises(InputError, match=r"bad\.toml: model\.hiden: .*unknown key"):
        Recipe.from_toml(bad)


def test_an_unknown_recipe_name_lists_the_bundled_ones() -> None:
    with pytest.raises(InputError, match=r"jsb-rnn-rbm.*Fix: pick one"):
        load("jsb-rnn-rbn")


def test_the_default_recipe_is_the_best_bundled_one_else_the_jsb_one_in_chunks() -> None:
    assert default_recipe("rnn-rbm", "jsb") == load("jsb-rnn-rbm")
    assert default_recipe("rnn-nade", "nottingham") == load("nottingham-rnn-nade")
    general = default_recipe("rnn-nade", "my_midi_folder")
    assert general.data.source == "my_midi_folder" and general.data.max_len == 100
    assert general.stages == load("jsb-rnn-nade").stages
    assert general.expected.test_nll == 0.0
    with pytest.raises(InputError, match="model: expected one of"):
        default_recipe("gru", "jsb")
