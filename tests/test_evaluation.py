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
