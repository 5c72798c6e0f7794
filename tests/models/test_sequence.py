"""The temporal family (RNN-RBM, RTRBM, LSTM-RTRBM, RNN-NADE): exact oracles on tiny models.

Sequence probabilities sum to 1 over all sequences; the CD surrogate with the exact model
expectation has the gradient of the exact log-likelihood through the recurrence (BPTT);
padding never changes a loss or a log-probability; generation follows the model (chi-square);
training resumes exactly; checkpoints round trip.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from scipy.stats import chi2
from torch import nn

from rnnrbm.checkpoint import load_checkpoint, save_checkpoint
from rnnrbm.core.contrastive import contrastive_loss
from rnnrbm.core.estimators import NADEFrame, RBMFrame
from rnnrbm.core.rbm import free_energy
from rnnrbm.data.batching import SequenceBatches, pad_sequences
from rnnrbm.models import SEQUENCE_MODELS, SequenceModel, build_sequence_model
from rnnrbm.models.recurrence import RNNRecurrence
from rnnrbm.models.sequence import FramePretraining, SequenceEpochs
from rnnrbm.registry import MODEL_TYPES
from rnnrbm.training import RowBatches, TrainConfig, fit
from rnnrbm.validation import InputError

F64 = torch.float64
NAMES = ["rnn-rbm", "rtrbm", "lstm-rtrbm", "rnn-nade"]
RBM_NAMES = ["rnn-rbm", "rtrbm", "lstm-rtrbm"]


def _randomise(module: nn.Module, seed: int) -> None:
    """Every parameter ~ N(0, 1): non-trivial conditionals, every term of every equation live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def _model(name: str, n_v: int = 3, n_h: int = 2, seed: int = 0, **kw) -> SequenceModel:
    options = dict(n_visible=n_v, n_hidden=n_h, dtype="float64", **kw)
    if name != "rtrbm":
        options["n_recurrent"] = 2
    if name != "rnn-nade":
        options["k"] = 2
    model = build_sequence_model(name, **options)
    _randomise(model, seed)
    return model


def _all_sequences(oracle, n_v: int, T: int) -> torch.Tensor:
    return oracle.states(n_v * T).reshape(-1, T, n_v)


def _padded(seed: int = 0, lengths=(3, 2, 1), n_v: int = 3, fill: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    seqs = [(torch.rand(n, n_v, generator=g) < 0.5).to(F64) for n in lengths]
    rolls, mask = pad_sequences(seqs, dtype=F64)
    rolls[~mask] = fill
    return seqs, rolls, mask


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("name", NAMES)
def test_sequence_probabilities_sum_to_one(oracle, name: str) -> None:
    """Σ over all 2^(n_v·T) sequences of Π_t p(v_t | v_<t) = 1 (exact per-frame log Z)."""
    model = _model(name)
    seqs = _all_sequences(oracle, 3, 3)  # 512 sequences in one batch
    lp = model.log_prob(seqs)
    assert lp.value.shape == (512, 3) and lp.estimator == "exact"
    total = torch.logsumexp(lp.value.sum(1), 0)
    torch.testing.assert_close(total, torch.zeros((), dtype=F64), atol=1e-10, rtol=0)
    # Shorter prefixes are normalised too (the model is a proper autoregressive chain).
    for T in (1, 2):
        assert abs(float(torch.logsumexp(lp.value[:: 2 ** (3 * (3 - T)), :T].sum(1), 0))) < 1e-10
    # Non-trivial: frame 2's distribution depends on the history.
    p2 = lp.value[:, 1].reshape(8, 8, 8)[:, :, 0]  # (v_1, v_2) with v_3 = 0
    assert (p2[0] - p2[5]).abs().max() > 1e-3


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_rnn_rbm_log_prob_matches_brute_force(oracle, activation: str) -> None:
    """log p(v_t | v_<t) = −F(v_t; b_t) − log Z(b_t) from the paper's equations, enumerated."""
    model = _model("rnn-rbm", n_v=3, n_h=2, activation=activation)
    act = torch.sigmoid if activation == "sigmoid" else torch.tanh
    rec, est = model.recurrence, model.estimator
    v = torch.tensor([[[1, 0, 1], [0, 1, 1], [1, 1, 0]]], dtype=F64)
    lp = model.log_prob(v).value[0]
    with torch.no_grad():  # float() of a tensor that requires grad warns
        u = rec.u0
        for t in range(3):
            b_v = est.b_v + rec.out.weight[:3] @ u
            b_h = est.b_h + rec.out.weight[3:] @ u
            fe = -(v[0, t] @ b_v) - torch.nn.functional.softplus(b_h + v[0, t] @ est.W).sum()
            expected = -fe - oracle.joint_log_z(est.W, b_v, b_h)
            assert abs(float(lp[t]) - float(expected)) < 1e-10
            r = rec.rnn
            u = act(r.weight_ih_l0 @ v[0, t] + r.weight_hh_l0 @ u + r.bias_ih_l0 + r.bias_hh_l0)


@pytest.mark.parametrize("name", RBM_NAMES)
def test_ais_log_prob_close_to_exact(name: str) -> None:
    model = _model(name, n_v=4, n_h=3)
    _, rolls, mask = _padded(1, (4, 2), n_v=4)
    exact = model.log_prob((rolls, mask))
    ais = model.log_prob(
        (rolls, mask), "ais", n_runs=200, n_betas=300, generator=torch.Generator().manual_seed(0)
    )
    assert ais.estimator == "ais(runs=200, betas=300)"
    assert torch.equal(ais.value[~mask], torch.zeros(2, dtype=F64))
    assert torch.equal(ais.se[~mask], torch.zeros(2, dtype=F64))
    assert bool((ais.se[mask] > 0).all())
    torch.testing.assert_close(ais.value, exact.value, atol=0.05, rtol=0)


# ----------------------------------------------------------------------------- gradients
def _exact_terms(model: SequenceModel, batch, states: torch.Tensor):
    """(exact mean NLL, surrogate mean F(v_data) − Σ_v p(v) F(v)) with p detached."""
    v, offs, _ = model.frame_inputs(batch)
    est = model.estimator
    b_v, b_h = est.biases(offs)
    N, S = v.shape[0], states.shape[0]
    f_all = free_energy(
        states.repeat(N, 1), est.W, b_v.repeat_interleave(S, 0), b_h.repeat_interleave(S, 0)
    ).reshape(N, S)
    f_data = est.free_energy(v, offs)
    nll = (f_data + torch.logsumexp(-f_all, 1)).mean()
    p = torch.softmax(-f_all, 1).detach()
    return nll, (f_data - (p * f_all).sum(1)).mean()


@pytest.mark.parametrize("name", RBM_NAMES)
def test_surrogate_gradient_equals_exact_likelihood_gradient(oracle, name: str) -> None:
    """With the model expectation computed exactly, the surrogate's autograd gradient w.r.t.
    ALL parameters — recurrence included (BPTT through the biases) — is the exact NLL's."""
    model = _model(name)
    _, rolls, mask = _padded(2, (3, 2))
    params = [p for p in model.parameters()]
    nll, surrogate = _exact_terms(model, (rolls, mask), oracle.states(3))
    g_nll = torch.autograd.grad(nll, params, retain_graph=True)
    g_sur = torch.autograd.grad(surrogate, params)
    for (pname, _), a, b in zip(model.named_parameters(), g_nll, g_sur, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=pname)
        assert a.abs().sum() > 1e-6, pname  # every parameter is live
    # and the exact NLL is what log_prob reports
    lp = model.log_prob((rolls, mask)).value
    torch.testing.assert_close(nll.detach(), -lp[mask].mean())


def test_nade_loss_is_the_exact_nll_with_its_gradient() -> None:
    model = _model("rnn-nade")
    _, rolls, mask = _padded(3, (3, 1, 2))
    loss, monitors = model.loss((rolls, mask))
    lp = model.log_prob((rolls, mask)).value
    torch.testing.assert_close(loss.detach(), -lp[mask].mean())
    assert float(monitors["frames"]) == 6.0
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_no_log_prob(name: str) -> None:
    model = _model(name)
    seqs, rolls, mask = _padded(4, (3, 1, 2), fill=1.0)  # padding frames are all ones
    lp = model.log_prob((rolls, mask))
    assert torch.equal(lp.value[~mask], torch.zeros(3, dtype=F64))
    for i, s in enumerate(seqs):
        alone = model.log_prob(s[None])
        torch.testing.assert_close(lp.value[i, : len(s)], alone.value[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_padding_content_never_changes_the_loss(name: str) -> None:
    """Same seed, same real frames: identical loss and gradients whatever the padding holds."""
    model = _model(name)
    _, zeros, mask = _padded(5, (3, 1, 2), fill=0.0)
    garbage = zeros.clone()
    garbage[~mask] = float("nan")
    results = []
    for rolls in (zeros, garbage):
        model.zero_grad()
        loss, _ = model.loss((rolls, mask), generator=torch.Generator().manual_seed(9))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0]) and torch.isfinite(results[0][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_padded_batch_loss_is_the_frame_weighted_mean(name: str) -> None:
    """Batch loss = frame-weighted mean of the sequences' losses (exact for NADE; for CD with the
    SAME fixed negatives per frame), values and gradients."""
    model = _model(name)
    seqs, rolls, mask = _padded(6, (3, 1, 2))
    g = torch.Generator().manual_seed(3)
    v_neg = (torch.rand(6, 3, generator=g) < 0.5).to(F64)  # one fixed negative per real frame

    def surrogate(batch, neg):
        if isinstance(model.estimator, NADEFrame):
            return model.loss(batch)[0]
        v, offs, _ = model.frame_inputs(batch)
        b_v, b_h = model.estimator.biases(offs)
        return contrastive_loss(v, neg, model.estimator.W, b_v, b_h)[0]

    params = list(model.parameters())
    batch_value = surrogate((rolls, mask), v_neg)
    batch_grad = torch.autograd.grad(batch_value, params)
    value, grads, start = 0.0, [torch.zeros_like(p) for p in params], 0
    for s in seqs:
        part = surrogate(s[None], v_neg[start : start + len(s)])
        weight = len(s) / 6
        value = value + weight * part.detach()
        # a 1-frame sequence never uses the recurrent weights: their gradient is zero
        for acc, gr in zip(
            grads, torch.autograd.grad(part, params, allow_unused=True), strict=True
        ):
            if gr is not None:
                acc += weight * gr
        start += len(s)
    torch.testing.assert_close(batch_value.detach(), value, rtol=1e-12, atol=1e-12)
    for a, b in zip(batch_grad, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_looped(name: str) -> None:
    model = _model(name, n_v=4, n_h=3)
    g = torch.Generator().manual_seed(7)
    rolls = (torch.rand(5, 6, 4, generator=g) < 0.4).to(F64)
    lp = model.log_prob(rolls).value
    offs = model.offsets(rolls)
    for i in range(5):
        torch.testing.assert_close(lp[i], model.log_prob(rolls[i : i + 1]).value[0])
        for a, b in zip(offs, model.offsets(rolls[i : i + 1]), strict=True):
            torch.testing.assert_close(a[i], b[0])


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("name", NAMES)
def test_generate_shapes_seeding_primer_and_clamp(name: str) -> None:
    model = _model(name, n_v=4, n_h=3)
    primer = torch.tensor([[[1, 0, 0, 1], [0, 1, 1, 0]]], dtype=F64)

    def gen(seed: int, **kw) -> torch.Tensor:
        return model.generate(5, generator=torch.Generator().manual_seed(seed), n=3, **kw)

    a, b, c = gen(0), gen(0), gen(1)
    assert a.shape == (3, 5, 4) and a.dtype == F64
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b) and not torch.equal(a, c)
    primed = gen(0, primer=primer, gibbs_steps=3)
    assert primed.shape == (3, 7, 4)
    assert torch.equal(primed[:, :2], primer.expand(3, 2, 4))
    mask = torch.zeros(3, 5, 4, dtype=torch.bool)
    mask[:, :, 0] = True
    mask[1, 2, 3] = True
    values = torch.ones(1, 5, 4)
    clamped = gen(2, clamp=(mask, values))
    assert torch.all(clamped[mask] == 1.0)
    # a clamp covering primer + new frames: the primer part is ignored
    full_mask = torch.cat([torch.ones(3, 2, 4, dtype=torch.bool), mask], 1)
    same = gen(2, primer=primer, clamp=(full_mask, torch.ones(1, 7, 4)))
    assert torch.all(same[:, 2:][mask] == 1.0) and torch.equal(same[:, :2], primed[:, :2])
    means = gen(3, mean_last=True)
    assert means.shape == (3, 5, 4) and bool(((means > 0) & (means < 1)).any())
    assert model.generate(0, primer=primer).shape == (1, 2, 4)


@pytest.mark.parametrize("name", ["rnn-rbm", "rtrbm", "lstm-rtrbm"])
def test_generation_chains_start_from_silence(name: str) -> None:
    """Each frame's Gibbs chain starts from the empty frame (the paper's code). With W = 30 and
    biases −15 the chain is absorbed where it starts: silence stays silent, while any start with
    a key on would turn every key on."""
    model = _model(name, n_v=4, n_h=3)
    with torch.no_grad():
        model.estimator.W.fill_(30.0)
        model.estimator.b_v.fill_(-15.0)
        model.estimator.b_h.fill_(-15.0)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(6, gibbs_steps=3, generator=gen, n=8), torch.zeros(8, 6, 4))
    ones = model.estimator.sample(None, 3, gen, n=8, v0=torch.eye(4, dtype=F64).repeat(2, 1))
    assert torch.equal(ones, torch.ones(8, 4))


@pytest.mark.parametrize("name", NAMES)
def test_generated_frames_follow_the_model(oracle, name: str) -> None:
    """Chi-square: the first frame follows exp(log p(v_1)) and the frame after a primer follows
    exp(log p(v_2 | v_1)) of the same model; each sample set rejects the other distribution."""
    model = _model(name, seed=1)
    states, n, limit = oracle.states(3), 6000, chi2.ppf(0.999, 7)
    primer = torch.tensor([[[1.0, 0.0, 1.0]]], dtype=F64)

    def counts(frames: torch.Tensor) -> torch.Tensor:
        return torch.bincount((frames.long() * torch.tensor([4, 2, 1])).sum(1), minlength=8)

    def stat(c: torch.Tensor, p: torch.Tensor) -> float:
        return float(((c.double() - n * p) ** 2 / (n * p)).sum())

    def draw(seed: int, **kw) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return model.generate(1, gibbs_steps=40, generator=gen, n=n, **kw)

    first = counts(draw(5)[:, 0])
    second = counts(draw(6, primer=primer)[:, 1])
    p_first = model.log_prob(states[:, None]).value[:, 0].exp()
    seqs = torch.cat([primer.expand(8, 1, 3), states[:, None]], 1)
    p_second = model.log_prob(seqs).value[:, 1].exp()
    assert abs(float(p_second.sum()) - 1) < 1e-10
    assert stat(first, p_first) < limit, stat(first, p_first)
    assert stat(second, p_second) < limit, stat(second, p_second)
    # the history matters: each sample set rejects the other frame's distribution
    assert stat(first, p_second) > limit and stat(second, p_first) > limit


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(tmp_path: Path, name: str) -> None:
    model = _model(name, n_v=4, n_h=3)
    assert MODEL_TYPES[name] is SEQUENCE_MODELS[name] and model.model_type == name
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    loaded = load_checkpoint(path).model
    assert type(loaded) is type(model) and loaded.config() == model.config()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rolls = (torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).to(F64)
    assert torch.equal(model.log_prob(rolls).value, loaded.log_prob(rolls).value)


def _sequences(n: int = 7, n_v: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(int(t), n_v, generator=g) < 0.3)
        for t in torch.randint(3, 12, (n,), generator=g)
    ]


@pytest.mark.parametrize("name", ["rnn-rbm", "rnn-nade"])
def test_resume_equals_uninterrupted(tmp_path: Path, name: str) -> None:
    data = SequenceEpochs(SequenceBatches(_sequences(), 3, seed=4, max_len=5))
    n_batches = len(data)
    config = TrainConfig(epochs=3, lr=0.05, optimizer="sgd", momentum=0.5, seed=7)

    def fresh() -> SequenceModel:
        return build_sequence_model(
            name,
            n_visible=5,
            n_hidden=4,
            n_recurrent=3,
            seed=1,
            **({} if name == "rnn-nade" else {"k": 3}),
        )

    full = fresh()
    fit(full, data, None, config)
    stop = n_batches + 2  # mid-epoch 2
    part = fresh()
    res = fit(
        part, data, None, dataclasses.replace(config, checkpoint_dir=str(tmp_path), max_steps=stop)
    )
    assert res.state.step == stop and res.state.batch == 2
    resumed = load_checkpoint(tmp_path / "last.safetensors").model
    fit(resumed, data, None, config, resume=tmp_path / "last.safetensors")
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["estimator.W"], fresh().state_dict()["estimator.W"])  # it trained


def test_frame_pretraining_trains_the_estimator_only() -> None:
    model = build_sequence_model("rnn-rbm", n_visible=5, n_hidden=4, n_recurrent=3, k=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frames = torch.cat(_sequences()).float()
    fit(
        FramePretraining(model), RowBatches(frames, 10, seed=0), None, TrainConfig(epochs=2, lr=0.1)
    )
    after = model.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        assert changed == k.startswith("estimator."), k


def test_validate_reports_the_exact_flat_nll() -> None:
    model = _model("rnn-nade")
    _, rolls, mask = _padded(8, (3, 1))
    lp = model.log_prob((rolls, mask)).value
    metric = model.validate((rolls, mask))["nll_per_frame"]
    assert abs(metric + float(lp[mask].mean())) < 1e-12
    assert model.validate([(rolls, mask), (rolls, mask)])["nll_per_frame"] == pytest.approx(metric)
    assert build_sequence_model("rnn-rbm").validate((rolls, mask)) == {}  # 88×150: no exact NLL


# ----------------------------------------------------------------------------- errors
def test_builder_and_input_errors() -> None:
    # the RNN-RBM's recurrence is the paper's σ unless asked otherwise (the tutorial's tanh)
    assert build_sequence_model("rnn-rbm").recurrence.activation == "sigmoid"  # type: ignore[union-attr]
    assert build_sequence_model("rnn-rbm", activation="tanh").config()["activation"] == "tanh"
    names = "'rnn-rbm', 'rtrbm', 'lstm-rtrbm' or 'rnn-nade'"
    with pytest.raises(InputError, match=f"sequence model name: expected {names}, got 'rbm-rnn'"):
        build_sequence_model("rbm-rnn")
    with pytest.raises(InputError, match="n_recurrent for 'rtrbm': expected None"):
        build_sequence_model("rtrbm", n_recurrent=10)
    with pytest.raises(InputError, match="k for 'rnn-nade': expected None"):
        build_sequence_model("rnn-nade", k=5)
    model = _model("rnn-rbm")
    with pytest.raises(InputError, match=r"batch rolls: expected a \(B, T, 3\) tensor"):
        model.loss(torch.zeros(2, 3, 4))
    with pytest.raises(InputError, match="batch mask: expected a bool tensor of shape"):
        model.loss((torch.zeros(2, 3, 3), torch.ones(2, 2, dtype=torch.bool)))
    with pytest.raises(InputError, match="primer: expected a tensor of shape"):
        model.generate(2, primer=torch.zeros(1, 2, 4))
    with pytest.raises(InputError, match="clamp mask: expected a tensor of shape"):
        model.generate(2, clamp=(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(1, 3, 3)))
    est = RBMFrame(3, 2)
    with pytest.raises(InputError, match=r"recurrence\.offset_sizes: expected the estimator's"):
        SequenceModel(RNNRecurrence(3, 2, (3, 5)), est)
    bare = SequenceModel(RNNRecurrence(3, 2, est.offset_sizes), est)
    with pytest.raises(InputError, match=r"SequenceModel\.config: expected a model built by"):
        bare.config()


@pytest.mark.parametrize("name", NAMES)
def test_carried_state_chunks_equal_whole_sequences(name: str) -> None:
    """``carry_state=True``: every chunk frame gets exactly the log-probability (and offsets) it
    has in its whole sequence, each frame is scored once per epoch, and the reset scheme
    differs (the state really is carried)."""
    model = _model(name, n_v=5, n_h=3)
    seqs = [s.to(F64) for s in _sequences(n=5, n_v=5, seed=3)]
    whole = {i: model.log_prob(s[None]).value[0] for i, s in enumerate(seqs)}
    total = sum(float(v.sum()) for v in whole.values())

    def epoch_total(carry: bool) -> float:
        loader = SequenceBatches(seqs, 2, seed=1, max_len=4, carry_state=carry)
        out = 0.0
        for batch in loader.batches(0):
            assert len(batch) == (3 if carry else 2)
            out += float(model.log_prob(batch).value.sum())
        return out

    assert abs(epoch_total(True) - total) < 1e-9
    assert abs(epoch_total(False) - total) > 1e-3
    # frame by frame: the second chunk of sequence 0 inside a carried batch
    loader = SequenceBatches(seqs[:1], 1, shuffle=False, max_len=4, carry_state=True)
    rolls, mask, loss_mask = list(loader.batches(0))[1]
    assert loss_mask.sum() == min(4, len(seqs[0]) - 4) and not loss_mask[0, :4].any()
    lp = model.log_prob((rolls, mask, loss_mask)).value[0]
    torch.testing.assert_close(lp[loss_mask[0]], whole[0][4:8], rtol=1e-12, atol=1e-12)
    assert torch.equal(lp[~loss_mask[0]], torch.zeros(int((~loss_mask[0]).sum()), dtype=F64))
    v, offsets, _ = model.frame_inputs((rolls, mask, loss_mask))
    full_offsets = model.offsets(seqs[0][None])
    for a, b in zip(offsets, full_offsets, strict=True):
        torch.testing.assert_close(a, b[0, 4:8], rtol=1e-12, atol=1e-12)
    assert torch.equal(v, seqs[0][4:8])
