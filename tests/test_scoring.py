"""Scoring a user's piece: per-frame log-likelihoods against a brute-force hidden-layer sum.

MIDI files, expected rolls and tiny models come from the ``music`` fixture (conftest).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnrbm.evaluation import score_midi, score_roll
from rnnrbm.music.midi import MidiFileError, MidiReadOptions, read_midi

pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def brute_log_prob(v, W, b_v, b_h):
    """log p(v) of an RBM by summing over every hidden state (float64); biases (n,) or (N, n)."""
    v, W = v.double(), W.double()
    b_v, b_h = (b.double().expand(v.shape[0], -1) for b in (b_v, b_h))
    n_h = W.shape[1]
    H = torch.tensor([[(i >> j) & 1 for j in range(n_h)] for i in range(2**n_h)]).double()
    # log Z = logsumexp_h [h·b_h + Σ_i softplus(b_v,i + (W h)_i)], one row per frame
    terms = b_h @ H.T + F.softplus(b_v[:, None, :] + (H @ W.T)[None]).sum(-1)
    log_z = torch.logsumexp(terms, -1)
    neg_f = (v * b_v).sum(-1) + F.softplus(v @ W + b_h).sum(-1)
    return neg_f - log_z


def test_score_roll_matches_a_hidden_sum_oracle(music):
    model = music.tiny()
    roll = music.roll_of(music.chords(5), 10)
    report = score_roll(model, roll, source="x")
    assert report.estimator == "exact" and report.n_frames == 10 and report.se == 0.0
    x = torch.from_numpy(roll).float()[None]
    with torch.no_grad():
        d_v, d_h = model.offsets(x)
    est = model.estimator
    ref = brute_log_prob(x[0], est.W, est.b_v + d_v[0], est.b_h + d_h[0])
    np.testing.assert_allclose(report.per_frame, ref.numpy(), rtol=1e-5)
    assert report.mean == pytest.approx(float(ref.mean()), rel=1e-5)
    d = report.as_dict()
    assert d["nll_per_frame"] == pytest.approx(-d["log_likelihood_per_frame"])
    assert len(d["per_frame"]) == 10 and "nats" in d["units"]


def test_score_of_a_plain_rbm_and_nade(music):
    roll = music.roll_of(music.chords(3), 6)
    rbm = music.tiny("rbm")
    rep = score_roll(rbm, roll)
    f = rbm.frame
    ref = brute_log_prob(torch.from_numpy(roll).float(), f.W, f.b_v, f.b_h)
    np.testing.assert_allclose(rep.per_frame, ref.numpy(), rtol=1e-5)
    nade = score_roll(music.tiny("rnn-nade"), roll)
    assert nade.estimator == "exact" and np.isfinite(nade.per_frame).all()
    assert (nade.per_frame < 0).all()


def test_score_ais_reports_its_settings_and_se(music):
    rep = score_roll(
        music.tiny(), music.roll_of(music.chords(2), 4), method="ais", ais_runs=20, ais_betas=50
    )
    assert rep.estimator.startswith("ais(runs=20, betas=50") and rep.se > 0
    exact = score_roll(music.tiny(), music.roll_of(music.chords(2), 4))
    assert abs(rep.mean - exact.mean) < 5 * rep.se + 0.05


def test_score_midi_equals_score_of_its_roll(tmp_path, music):
    notes = [(62, 0, 1), (66, 1, 2), (69, 2, 3)]
    path = music.write_midi(tmp_path / "s.mid", notes, key=music.D_MAJOR)
    opts = MidiReadOptions(transpose_to_c=True)
    rep = score_midi(music.tiny(), path, options=opts)
    direct = score_roll(music.tiny(), read_midi(path, opts).roll)
    np.testing.assert_array_equal(rep.per_frame, direct.per_frame)
    assert rep.transposition == -2 and rep.source == str(path)
    empty = tmp_path / "e.mid"
    empty.write_bytes(b"")
    with pytest.raises(MidiFileError, match=r"e\.mid.*empty"):
        score_midi(music.tiny(), empty)
