"""Protocol regression: the Note 1-Gram and Random baselines reproduce the published rows."""

from __future__ import annotations

import pytest

from rnnrbm.data.polyphonic import load_polyphonic
from rnnrbm.evaluation import NLLReport, note_one_gram_log_likelihood, random_log_likelihood

PUBLISHED = {"piano-midi": -11.05, "nottingham": -10.25, "musedata": -11.51, "jsb": -11.06}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_note_one_gram_reproduces_published(shared_data, name: str) -> None:  # type: ignore[no-untyped-def]
    ds = load_polyphonic(name, root=shared_data)
    ll = note_one_gram_log_likelihood(ds.frames("train"), ds.frames("test"))
    assert round(ll, 2) == PUBLISHED[name]


def test_random_baseline() -> None:
    assert round(random_log_likelihood(), 2) == -61.00


def test_report_text_and_dict() -> None:
    r = NLLReport(6.27, 0.01, 4725, "ais(runs=100, betas=1000)", "jsb")
    assert "6.270 ± 0.010 nats/frame over 4725 frames" in str(r)
    assert r.as_dict()["units"].startswith("nats per frame")


# ------------------------------------------------------------------------------------ protocol
# (sequence NLL per frame, AIS batched over every frame, frame accuracy, evaluate)
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import rnnrbm.core.partition as partition  # noqa: E402
from rnnrbm.data.polyphonic import PolyphonicDataset  # noqa: E402
from rnnrbm.evaluation import (  # noqa: E402
    accuracy_per_frame,
    ais_base_bias,
    evaluate,
    frame_accuracy,
    frame_log_probs,
    sequence_nll,
)
from rnnrbm.models.sequence import build_sequence_model  # noqa: E402
from rnnrbm.validation import InputError, InputTypeError  # noqa: E402

LENGTHS = (1, 4, 9)  # unequal: the flat mean and the per-sequence mean differ


def _randomise(module: nn.Module, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _model(name: str, n_v: int, n_h: int, seed: int = 0, scale: float = 1.0):
    opts: dict = {"n_visible": n_v, "n_hidden": n_h, "dtype": "float64"}
    if name != "rtrbm":
        opts["n_recurrent"] = 3
    m = build_sequence_model(name, **opts)
    _randomise(m, seed, scale)
    return m


def _rolls(n_v: int, lengths=LENGTHS, seed: int = 0, p: float = 0.4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((T, n_v)) < p for T in lengths]


@torch.no_grad()
def _brute_frame_log_probs(model, rolls, oracle) -> list[list[float]]:
    """log p(v_t | v_<t) per frame: offsets from the model on each sequence ALONE (no padding),
    then log Σ_h exp(−E(v, h)) − log Σ_{v,h} exp(−E(v, h)) by full enumeration."""
    est = model.estimator
    H = oracle.states(est.n_hidden)
    out = []
    for r in rolls:
        v_seq = torch.as_tensor(r, dtype=torch.float64)[None]
        d_v, d_h = model.offsets(v_seq)
        per = []
        for t in range(r.shape[0]):
            b_v, b_h = est.b_v + d_v[0, t], est.b_h + d_h[0, t]
            v = v_seq[0, t]
            log_num = torch.logsumexp(v @ b_v + H @ b_h + (v @ est.W) @ H.T, 0)
            per.append(float(log_num) - oracle.joint_log_z(est.W, b_v, b_h))
        out.append(per)
    return out


@pytest.mark.parametrize("name", ["rnn-rbm", "rtrbm", "lstm-rtrbm"])
def test_exact_nll_is_the_flat_mean_of_brute_force_frames(name: str, oracle) -> None:  # type: ignore[no-untyped-def]
    model = _model(name, n_v=4, n_h=3, seed=1)
    rolls = _rolls(4)
    brute = _brute_frame_log_probs(model, rolls, oracle)
    flat = -float(np.mean([x for seq in brute for x in seq]))
    per_sequence = -float(np.mean([np.mean(seq) for seq in brute]))
    report = sequence_nll(model, rolls, method="exact", batch_size=2)
    assert report.estimator == "exact" and report.se == 0.0
    assert report.n_frames == sum(LENGTHS) and report.n_sequences == len(LENGTHS)
    assert report.nll == pytest.approx(flat, abs=1e-9)
    # The per-sequence average is a different number (not the protocol): show it.
    assert abs(per_sequence - flat) > 0.01  # ≫ the 1e-9 tolerance above
    lp = frame_log_probs(model, rolls, method="exact")
    assert -float(lp.per_sequence_mean().mean()) == pytest.approx(per_sequence, abs=1e-9)
    # "auto" picks the exact route for a 3-unit hidden layer.
    assert sequence_nll(model, rolls).nll == pytest.approx(flat, abs=1e-9)


def test_nade_nll_is_exact_and_flat() -> None:
    model = _model("rnn-nade", n_v=5, n_h=4, seed=2)
    rolls = _rolls(5, seed=3)
    report = sequence_nll(model, rolls, method="ais", ais_runs=5, ais_betas=5)
    assert report.estimator == "exact" and report.se == 0.0
    from rnnrbm.data.batching import pad_sequences

    lp = model.log_prob(pad_sequences(rolls, dtype=torch.float64))
    assert report.nll == pytest.approx(-float(lp.value.sum()) / sum(LENGTHS), abs=1e-9)


@pytest.mark.parametrize("base", ["gibbs", "mean-field", "bias", "zero"])
def test_ais_nll_within_three_se_of_exact(base: str) -> None:
    model = _model("rnn-rbm", n_v=10, n_h=8, seed=4)
    rolls = _rolls(10, lengths=(3, 6, 2), seed=5)
    exact = sequence_nll(model, rolls, method="exact")
    ais = sequence_nll(
        model, rolls, method="ais", ais_runs=100, ais_betas=300, ais_base=base, seed=6
    )
    assert ais.estimator == f"ais(runs=100, betas=300, base={base})"
    assert 0.0 < ais.se < 0.05
    assert abs(ais.nll - exact.nll) < 3 * ais.se


def test_runs_gap_flags_an_unconverged_ais_estimate() -> None:
    """Doubling the runs moves a converged estimate by ~0 and a poor one (3 β on sharp frames,
    heavy-tailed weights) by far more than its s.e.; the report says which, and the half-run
    figure it compares with is the mean of the two halves' log-mean-exp."""
    model = _model("rnn-rbm", n_v=10, n_h=8, seed=4, scale=3.0)
    rolls = _rolls(10, lengths=(3, 6, 2), seed=5)
    exact = sequence_nll(model, rolls, method="exact")
    assert exact.runs_gap is None and exact.converged

    def ais(betas: int) -> NLLReport:
        return sequence_nll(
            model, rolls, method="ais", ais_runs=40, ais_betas=betas, ais_base="zero", seed=6
        )

    poor, good = ais(3), ais(3000)
    assert poor.runs_gap is not None and good.runs_gap is not None
    assert exact.nll - poor.nll > 1.0  # the poor estimate errs low, as AIS does
    assert poor.runs_gap > 3 * poor.se and poor.runs_gap > 0.05 and not poor.converged
    assert "NOT converged" in str(poor) and poor.as_dict()["runs_gap"] == poor.runs_gap
    assert abs(good.runs_gap) < 0.01 and good.converged and "NOT" not in str(good)
    assert abs(good.nll - exact.nll) < 0.05
    # the definition, from the per-frame values
    lp = frame_log_probs(model, rolls, method="ais", ais_runs=40, ais_betas=3, ais_base="zero",
                         seed=6)  # fmt: skip
    assert lp.value_half_runs is not None
    gap = float((lp.value_half_runs - lp.value).mean())
    assert poor.runs_gap == pytest.approx(gap, abs=1e-12)


def test_ais_is_one_batched_call_over_every_frame(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model = _model("rnn-rbm", n_v=6, n_h=5, seed=7)
    rolls = _rolls(6)
    calls = []
    real = partition.log_partition_ais

    def spy(W, b_v, b_h, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(tuple(b_v.shape))
        return real(W, b_v, b_h, *a, **kw)

    monkeypatch.setattr(partition, "log_partition_ais", spy)
    sequence_nll(model, rolls, method="ais", ais_runs=3, ais_betas=4, batch_size=1)
    assert calls == [(sum(LENGTHS), 6)]


def test_auto_uses_ais_for_large_rbm_frames() -> None:
    model = build_sequence_model("rnn-rbm", n_visible=88, n_hidden=30, n_recurrent=4)
    rolls = _rolls(88, lengths=(2, 1))
    report = sequence_nll(model, rolls, ais_runs=2, ais_betas=3)
    assert report.estimator.startswith("ais(runs=2, betas=3")


def test_ais_base_bias_options() -> None:
    model = _model("rnn-rbm", n_v=6, n_h=5, seed=8, scale=4.0)
    est = model.estimator
    offsets = (torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64))
    assert torch.equal(ais_base_bias(est, offsets, "bias"), (est.b_v + offsets[0]).clamp(-9, 9))
    assert ais_base_bias(est, offsets, "zero") is None
    with torch.no_grad():
        est.W.zero_()  # no hidden coupling: the mean-field marginals are exactly σ(b_v)
    mf = ais_base_bias(est, offsets, "mean-field")
    assert mf.shape == (3, 6)
    torch.testing.assert_close(mf, est.b_v.clamp(-9, 9).expand(3, 6))
    # Gibbs marginals of a W = 0 frame: the mean of E[v | h] = σ(b_v) exactly, then smoothed.
    p = torch.sigmoid(est.b_v)
    gibbs = ais_base_bias(est, offsets, "gibbs", chains=4, steps=2, generator=torch.Generator())
    torch.testing.assert_close(gibbs, torch.logit((4 * p + 0.5) / 5).expand(3, 6))
    shared = ais_base_bias(est, None, "gibbs", chains=4, steps=2)
    torch.testing.assert_close(shared, torch.logit((4 * p + 0.5) / 5))
    data = np.array([[1, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0]])
    base = ais_base_bias(est, offsets, "data", data=data)
    assert base.shape == (6,) and float(base[0]) > 0 > float(base[2])
    with pytest.raises(InputError, match="base_data"):
        ais_base_bias(est, offsets, "data")
    with pytest.raises(InputError, match="ais_base"):
        ais_base_bias(est, offsets, "uniform")  # type: ignore[arg-type]


def test_accuracy_per_frame_hand_built() -> None:
    truth = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    acc = accuracy_per_frame(truth, pred)
    assert acc.tolist() == [1.0, 0.0, pytest.approx(1 / 3), 1.0, 0.0]
    excl = accuracy_per_frame(truth, pred, "exclude")
    assert np.isnan(excl[3].item()) and excl[4].item() == 0.0


def _deterministic_model(on_keys: list[int], n_v: int = 6):
    """Predictions are (almost surely) exactly ``on_keys``: huge visible biases, no coupling."""
    m = build_sequence_model("rnn-rbm", n_visible=n_v, n_hidden=3, n_recurrent=2)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.estimator.b_v.fill_(-40.0)
        m.estimator.b_v[on_keys] = 40.0
    return m


def test_frame_accuracy_perfect_disjoint_and_empty_convention() -> None:
    s = np.zeros((3, 6), bool)
    s[:, [0, 2]] = True
    perfect = frame_accuracy(_deterministic_model([0, 2]), [s, s[:1]], samples=3)
    assert perfect.accuracy == 1.0 and perfect.n_frames == 4 and perfect.se == 0.0
    disjoint = frame_accuracy(_deterministic_model([1, 3, 5]), [s], samples=3)
    assert disjoint.accuracy == 0.0
    # A silent model on 2 rests + 3 non-empty frames: rests count 1 ("correct") or drop out.
    silent = _deterministic_model([])
    rolls = [np.concatenate([np.zeros((2, 6), bool), s])]
    correct = frame_accuracy(silent, rolls, samples=2)
    assert correct.accuracy == pytest.approx(2 / 5) and correct.n_frames == 5
    excluded = frame_accuracy(silent, rolls, samples=2, empty_frames="exclude")
    assert excluded.accuracy == 0.0 and excluded.n_frames == 3
    assert "both-empty frames: exclude" in str(excluded)
    with pytest.raises(InputError, match="empty_frames"):
        frame_accuracy(silent, rolls, empty_frames="ignore")  # type: ignore[arg-type]


def test_seeded_determinism() -> None:
    model = _model("rnn-rbm", n_v=8, n_h=6, seed=9, scale=0.5)
    rolls = _rolls(8, seed=10)

    def run(seed: int) -> tuple[float, float]:
        nll = sequence_nll(model, rolls, method="ais", ais_runs=4, ais_betas=10, seed=seed)
        acc = frame_accuracy(model, rolls, samples=4, seed=seed)
        return nll.nll, acc.accuracy

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_evaluate_returns_json_with_settings() -> None:
    rolls = _rolls(88, lengths=(3, 5), seed=11, p=0.1)
    ds = PolyphonicDataset("toy", "memory", {"train": rolls, "test": rolls[:1]})
    model = build_sequence_model("rnn-rbm", n_visible=88, n_hidden=4, n_recurrent=3)
    out = evaluate(model, ds, samples=2, gibbs_steps=2)
    json.dumps(out)
    assert out["model"] == "rnn-rbm" and out["split"] == "test"
    assert out["nll"]["estimator"] == "exact" and out["nll"]["n_frames"] == 3
    assert out["accuracy"]["samples"] == 2 and out["settings"]["ais_runs"] == 100
    assert evaluate(model, ds, accuracy=False)["accuracy"] is None


def test_errors_name_the_argument() -> None:
    model = _model("rnn-rbm", n_v=4, n_h=3)
    with pytest.raises(InputTypeError, match="model: expected a temporal SequenceModel"):
        sequence_nll(nn.Linear(2, 2), _rolls(4))
    with pytest.raises(InputError, match=r"rolls\[1\]: expected a \(T ≥ 1, 4\) roll"):
        sequence_nll(model, [np.zeros((2, 4)), np.zeros((2, 5))])
    with pytest.raises(InputError, match="rolls: expected a non-empty list"):
        sequence_nll(model, [])
    with pytest.raises(InputError, match="method"):
        sequence_nll(model, _rolls(4), method="mcmc")  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="dataset"):
        evaluate(model, _rolls(4))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ plain RBM
def test_evaluate_rbm_is_the_flat_exact_nll_of_independent_frames(oracle) -> None:  # type: ignore[no-untyped-def]
    from rnnrbm.evaluation import evaluate_rbm
    from rnnrbm.models import RBM

    rolls = _rolls(6, lengths=(3, 5), seed=12)
    ds = PolyphonicDataset("toy", "memory", {"train": rolls, "test": rolls})
    model = RBM(6, 4, dtype="float64")
    _randomise(model, 13)
    f = model.frame
    v = torch.as_tensor(np.concatenate(rolls), dtype=torch.float64)
    H = oracle.states(4)
    with torch.no_grad():
        log_num = torch.logsumexp(v @ f.b_v[:, None] + (H @ f.b_h)[None] + (v @ f.W) @ H.T, 1)
        brute = -float((log_num - oracle.joint_log_z(f.W, f.b_v, f.b_h)).mean())
    out = evaluate_rbm(model, ds)  # "auto": 4 hidden units are affordable
    json.dumps(out)
    assert out["model"] == "rbm" and out["split"] == "test" and out["accuracy"] is None
    assert out["nll"]["estimator"] == "exact" and out["nll"]["se"] == 0.0
    assert out["nll"]["n_frames"] == 8 and out["nll"]["nll"] == pytest.approx(brute, abs=1e-9)
    ais = evaluate_rbm(model, ds, method="ais", ais_runs=50, ais_betas=200, seed=1)
    assert ais["nll"]["estimator"].startswith("ais(runs=50, betas=200")
    assert abs(ais["nll"]["nll"] - brute) < 3 * ais["nll"]["se"] + 1e-3
    assert ais == evaluate_rbm(model, ds, method="ais", ais_runs=50, ais_betas=200, seed=1)


def test_evaluate_rbm_uses_ais_above_the_affordable_size_and_names_errors() -> None:
    from rnnrbm.evaluation import evaluate_rbm
    from rnnrbm.models import RBM

    rolls = _rolls(30, lengths=(2,), seed=14)
    ds = PolyphonicDataset("toy", "memory", {"test": rolls})
    out = evaluate_rbm(RBM(30, 21), ds, ais_runs=2, ais_betas=3)
    assert out["nll"]["estimator"].startswith("ais(runs=2, betas=3")
    with pytest.raises(InputTypeError, match="model: expected a plain RBM"):
        evaluate_rbm(_model("rnn-rbm", n_v=30, n_h=3), ds)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="dataset"):
        evaluate_rbm(RBM(30, 21), rolls)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="method: expected 'auto', 'exact' or 'ais'"):
        evaluate_rbm(RBM(30, 21), ds, method="mcmc")  # type: ignore[arg-type]
