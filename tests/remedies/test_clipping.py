"""Each clipper's defining property, checked in float64 against a plain reference."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bptt.remedies import (
    CLIPPERS,
    AbstractClipper,
    AGCClipper,
    AutoClipper,
    ClipEvent,
    NormClipper,
    PerParameterNormClipper,
    ValueClipper,
    ZScoreClipper,
    clip_gradients_,
    make_clipper,
)

F64 = torch.float64


def parameters_with_grads(*grads, weights=None):
    """Parameters (zero weights unless given) whose ``.grad`` are copies of ``grads``."""
    weights = weights or [
        torch.zeros_like(torch.as_tensor(g, dtype=F64)) for g in grads
    ]
    params = []
    for weight, grad in zip(weights, grads, strict=True):
        p = torch.nn.Parameter(torch.as_tensor(weight, dtype=F64).clone())
        p.grad = torch.as_tensor(grad, dtype=F64).clone()
        params.append(p)
    return params


def flat_grad(params):
    return torch.cat([p.grad.flatten() for p in params])


def random_grads(generator, scale=1.0):
    return [
        scale * torch.randn(3, 4, generator=generator, dtype=F64),
        scale * torch.randn(4, generator=generator, dtype=F64),
    ]


# clip_gradients_, the function the training loop used before the clippers (kept as it was)


def test_clip_by_norm_keeps_the_direction_and_reports_the_norm():
    params = parameters_with_grads(
        torch.tensor([3.0, 0.0], dtype=F64), torch.tensor([4.0], dtype=F64)
    )
    event = clip_gradients_(params, max_norm=1.0)
    assert event.norm == pytest.approx(5.0) and event.clipped and event.threshold == 1.0
    clipped = torch.cat([p.grad for p in params])
    torch.testing.assert_close(
        clipped, torch.tensor([0.6, 0.0, 0.8], dtype=F64), atol=1e-6, rtol=0
    )


def test_clip_by_value_bounds_entries_and_changes_the_direction():
    params = parameters_with_grads(torch.tensor([3.0, 0.5], dtype=F64))
    event = clip_gradients_(params, max_value=1.0)
    assert event.norm == pytest.approx((9.25) ** 0.5) and event.clipped
    clipped = params[0].grad
    torch.testing.assert_close(clipped, torch.tensor([1.0, 0.5], dtype=F64))
    cosine = torch.nn.functional.cosine_similarity(
        clipped, torch.tensor([3.0, 0.5], dtype=F64), dim=0
    )
    assert cosine < 0.99


def test_small_gradients_are_left_alone():
    params = parameters_with_grads(torch.tensor([0.3, 0.4]))
    event = clip_gradients_(params, max_norm=1.0)
    assert not event.clipped and event.norm == pytest.approx(0.5)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.3, 0.4], dtype=F64))


def test_both_thresholds_is_an_error():
    with pytest.raises(ValueError, match="not both"):
        clip_gradients_([], max_norm=1.0, max_value=1.0)


# the clippers


def test_norm_clipper_keeps_the_direction_and_bounds_the_norm():
    generator = torch.Generator().manual_seed(0)
    params = parameters_with_grads(*random_grads(generator, scale=10.0))
    before = flat_grad(params)
    event = NormClipper(2.0)(params)
    after = flat_grad(params)
    assert event.norm == pytest.approx(float(before.norm())) and event.threshold == 2.0
    assert event.clipped and event.post_norm == pytest.approx(float(after.norm()))
    assert after.norm() <= 2.0 + 1e-9 and after.norm() == pytest.approx(2.0, rel=1e-5)
    assert torch.nn.functional.cosine_similarity(before, after, dim=0) == pytest.approx(
        1.0, abs=1e-12
    )


def test_value_clipper_bounds_entries_and_changes_the_direction():
    generator = torch.Generator().manual_seed(1)
    params = parameters_with_grads(*random_grads(generator, scale=2.0))
    before = flat_grad(params)
    event = ValueClipper(1.0)(params)
    after = flat_grad(params)
    assert after.abs().max() <= 1.0
    torch.testing.assert_close(after, before.clamp(-1.0, 1.0), rtol=0, atol=0)
    assert event.clipped and event.clipped_fraction == pytest.approx(
        float((before.abs() > 1).double().mean())
    )
    assert torch.nn.functional.cosine_similarity(before, after, dim=0) < 0.999


def test_per_parameter_clipper_bounds_each_parameter_and_leaves_small_ones():
    params = parameters_with_grads([3.0, 4.0], [0.5], [[6.0, 8.0], [0.0, 0.0]])
    before = [p.grad.clone() for p in params]
    event = PerParameterNormClipper(1.0)(params)
    for p, old in zip(params, before, strict=True):
        assert p.grad.norm() <= 1.0 + 1e-9
        expected = old * min(1.0, 1.0 / (float(old.norm()) + 1e-6))
        torch.testing.assert_close(p.grad, expected)
    torch.testing.assert_close(params[1].grad, before[1], rtol=0, atol=0)
    assert event.clipped and event.clipped_fraction == pytest.approx(2 / 3)


def test_autoclip_threshold_is_the_quantile_of_all_norms_seen_so_far():
    generator = torch.Generator().manual_seed(2)
    clipper, history = AutoClipper(percentile=10), []
    for step in range(30):
        params = parameters_with_grads(*random_grads(generator, scale=1.0 + step % 7))
        history.append(float(flat_grad(params).norm()))
        event = clipper(params)
        expected = float(torch.quantile(torch.tensor(history, dtype=F64), 0.10))
        assert event.threshold == pytest.approx(expected, rel=1e-12)
        assert event.norm == pytest.approx(history[-1])
        assert event.clipped == (history[-1] > expected)
        assert event.post_norm == pytest.approx(min(history[-1], expected), rel=1e-5)


def test_autoclip_with_a_window_uses_only_the_last_norms():
    generator = torch.Generator().manual_seed(3)
    clipper, history = AutoClipper(percentile=50, history=5), []
    for step in range(40):  # past several refills of the buffer
        params = parameters_with_grads(*random_grads(generator, scale=1.0 + step))
        history.append(float(flat_grad(params).norm()))
        event = clipper(params)
        expected = float(torch.quantile(torch.tensor(history[-5:], dtype=F64), 0.5))
        assert event.threshold == pytest.approx(expected, rel=1e-12)
    assert clipper.state_dict()["history"] == pytest.approx(history[-5:])


def run_clipper(clipper, generator, steps, spike_every=None):
    """Events and clipped gradients of ``steps`` calls on random gradients."""
    out = []
    for step in range(steps):
        spike = spike_every is not None and step % spike_every == spike_every - 1
        params = parameters_with_grads(
            *random_grads(generator, scale=30.0 if spike else 1.0)
        )
        out.append((clipper(params), flat_grad(params)))
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda: AutoClipper(percentile=25),
        lambda: AutoClipper(percentile=25, history=6),
        lambda: ZScoreClipper(z=2.0, alpha=0.9, warmup=5),
    ],
    ids=["autoclip", "autoclip-window", "zscore"],
)
@pytest.mark.parametrize("split", [3, 12])  # zscore: inside and after its warm-up
def test_a_resumed_adaptive_clipper_behaves_identically(make, split):
    generator = torch.Generator().manual_seed(4)
    uninterrupted = make()
    reference = run_clipper(uninterrupted, generator, 25, spike_every=4)
    generator = torch.Generator().manual_seed(4)
    first = make()
    head = run_clipper(first, generator, split, spike_every=4)
    state = json.loads(json.dumps(first.state_dict()))  # plain numbers: survives JSON
    resumed = make()
    resumed.load_state_dict(state)
    tail = []
    # the same gradients as the reference's steps split..24
    for step in range(split, 25):
        spike = step % 4 == 3
        params = parameters_with_grads(
            *random_grads(generator, scale=30.0 if spike else 1.0)
        )
        tail.append((resumed(params), flat_grad(params)))
    assert any(event.clipped for event, _ in reference[split:])
    for (expected, grad), (event, resumed_grad) in zip(
        reference, head + tail, strict=True
    ):
        assert event == expected
        torch.testing.assert_close(resumed_grad, grad, rtol=0, atol=0)


def test_autoclip_ignores_non_finite_norms_and_never_erases_the_update():
    clipper = AutoClipper(percentile=10)
    event = clipper(parameters_with_grads([0.0, 0.0]))
    assert event.threshold == 0.0 and not event.clipped
    clipper(parameters_with_grads([math.inf, 0.0]))
    params = parameters_with_grads([3.0, 4.0])
    # history: 0, (inf: left out), 5 -> the 10th percentile is 0.5
    event = clipper(params)
    assert event.threshold == pytest.approx(0.5)
    assert params[0].grad.norm() == pytest.approx(0.5, rel=1e-5)


def reference_agc(weights, grads, clipping, eps):
    """AGC one unit at a time, in plain Python over the rows."""
    out, clipped, units = [], 0, 0
    for weight, grad in zip(weights, grads, strict=True):
        w_rows = (
            weight.reshape(weight.shape[0], -1)
            if weight.ndim > 1
            else weight.reshape(-1, 1)
        )
        g_rows = (
            grad.reshape(grad.shape[0], -1).clone()
            if grad.ndim > 1
            else grad.reshape(-1, 1).clone()
        )
        for i in range(len(g_rows)):
            limit = clipping * max(float(w_rows[i].norm()), eps)
            units += 1
            if float(g_rows[i].norm()) > limit:
                g_rows[i] = g_rows[i] * limit / float(g_rows[i].norm())
                clipped += 1
        out.append(g_rows.reshape(grad.shape))
    return out, clipped / units


def test_agc_clips_exactly_the_units_whose_ratio_exceeds_the_threshold():
    generator = torch.Generator().manual_seed(5)
    weights = [
        torch.randn(6, 4, generator=generator, dtype=F64),  # a matrix: units are rows
        # a kernel: flattened rows
        torch.randn(5, 2, 3, 3, generator=generator, dtype=F64),
        torch.tensor([0.0, 1.0, -2.0, 0.0], dtype=F64),  # a bias: units are entries
    ]
    weights[0][2] = 0.0  # a zero row: its limit is clipping * eps
    grads = [
        0.05
        * torch.randn(w.shape, generator=generator, dtype=F64)
        * torch.rand(w.shape[0], *[1] * (w.ndim - 1), generator=generator, dtype=F64)
        for w in weights
    ]
    clipping, eps = 0.02, 1e-3
    expected, fraction = reference_agc(weights, grads, clipping, eps)
    params = parameters_with_grads(*grads, weights=weights)
    event = AGCClipper(clipping=clipping, eps=eps)(params)
    assert 0 < fraction < 1  # some units clipped, some not: the test discriminates
    assert event.clipped and event.threshold == clipping
    assert event.clipped_fraction == pytest.approx(fraction)
    for p, grad, want in zip(params, grads, expected, strict=True):
        torch.testing.assert_close(p.grad, want)
        rows = grad.reshape(grad.shape[0], -1) if grad.ndim > 1 else grad.reshape(-1, 1)
        new = p.grad.reshape(rows.shape)
        untouched = (new == rows).all(dim=1)
        w_rows = p.detach().reshape(rows.shape)
        ratio = rows.norm(dim=1) / w_rows.norm(dim=1).clamp_min(eps)
        assert torch.equal(untouched, ratio <= clipping)  # others are left bit for bit


def zscore_reference(norms, z, alpha, warmup):
    """ZClip's rule in plain Python: returns the threshold per step (None in warm-up)."""
    thresholds, mean, var = [], None, None
    for i, norm in enumerate(norms):
        if i < warmup:
            thresholds.append(None)
            if i == warmup - 1:
                mean = sum(norms[:warmup]) / warmup
                var = sum((n - mean) ** 2 for n in norms[:warmup]) / warmup
            continue
        threshold = mean + z * math.sqrt(var)
        thresholds.append(threshold)
        kept = min(norm, threshold)
        mean = alpha * mean + (1 - alpha) * kept
        var = alpha * var + (1 - alpha) * (kept - mean) ** 2
    return thresholds


def test_zscore_clips_a_spike_after_warmup_but_not_ordinary_norms():
    generator = torch.Generator().manual_seed(6)
    z, alpha, warmup = 2.5, 0.9, 10
    clipper = ZScoreClipper(z=z, alpha=alpha, warmup=warmup)
    norms, events = [], []
    for step in range(60):
        spike = step in (3, 30, 31, 50)  # one during warm-up, a burst, one late
        grad = torch.full((4,), 50.0 if spike else 1.0, dtype=F64)
        grad = grad + 0.05 * torch.randn(4, generator=generator, dtype=F64)
        params = parameters_with_grads(grad)
        norms.append(float(grad.norm()))
        events.append(clipper(params))
        if events[-1].clipped:
            assert params[0].grad.norm() == pytest.approx(
                events[-1].threshold, rel=1e-9
            )
            assert events[-1].post_norm == pytest.approx(events[-1].threshold, rel=1e-9)
    expected = zscore_reference(norms, z, alpha, warmup)
    for event, threshold in zip(events, expected, strict=True):
        assert (event.threshold is None) == (threshold is None)
        if threshold is not None:
            assert event.threshold == pytest.approx(threshold, rel=1e-9)
    clipped = [step for step, event in enumerate(events) if event.clipped]
    assert clipped == [30, 31, 50]  # not the warm-up spike, not one ordinary norm
    # statistics are kept from the clipped norm: the spike barely moves the threshold
    assert events[32].threshold < 2 * events[29].threshold


def test_clippers_work_in_a_plain_training_loop_and_log_json():
    torch.manual_seed(0)
    for spec in [
        "norm:0.1",
        "per-parameter:0.1",
        "value:0.01",
        "autoclip:10",
        "agc:0.01",
        "zscore:2.5",
    ]:
        model = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        clipper = make_clipper(spec)
        assert isinstance(clipper, AbstractClipper)
        for _ in range(3):
            loss = model(torch.randn(16, 3)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            event = clipper(model.parameters())
            optimizer.step()
            record = json.loads(json.dumps(event.to_dict()))
            assert set(record) == {
                "norm",
                "threshold",
                "clipped",
                "post_norm",
                "clipped_fraction",
            }
            assert event.post_norm <= event.norm + 1e-6


def test_parameters_without_gradients_give_an_empty_event():
    p = torch.nn.Parameter(torch.ones(3))
    assert NormClipper(1.0)([p]) == ClipEvent(
        norm=0.0, threshold=None, clipped=False, post_norm=0.0
    )


# specs and the registry


@pytest.mark.parametrize(
    ("spec", "cls", "attribute", "value"),
    [
        ("norm:1", NormClipper, "max_norm", 1.0),
        ("per-parameter:0.5", PerParameterNormClipper, "max_norm", 0.5),
        ("value:25", ValueClipper, "max_value", 25.0),
        ("autoclip:10", AutoClipper, "percentile", 10.0),
        ("autoclip", AutoClipper, "percentile", 10.0),
        ("agc:0.01", AGCClipper, "clipping", 0.01),
        ("agc", AGCClipper, "clipping", 0.01),
        ("zscore:2.5", ZScoreClipper, "z", 2.5),
        ("zscore", ZScoreClipper, "z", 2.5),
    ],
)
def test_make_clipper_parses_specs(spec, cls, attribute, value):
    clipper = make_clipper(spec)
    assert type(clipper) is cls and getattr(clipper, attribute) == value


def test_make_clipper_none_and_the_registry():
    assert make_clipper("none") is None
    assert CLIPPERS.names() == sorted(
        ["norm", "per-parameter", "value", "autoclip", "agc", "zscore"]
    )
    with pytest.raises(KeyError, match="already registered"):
        CLIPPERS.register("norm", NormClipper)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nrom:1", r"unknown clipper 'nrom'.*expected one of.*Did you mean 'norm'"),
        ("norm:one", r"expected a number after 'norm:', received 'one'"),
        ("norm", r"needs a value.*'norm:1'"),
        ("value:-1", r"max_value must be a positive finite number, received -1"),
        ("norm:nan", r"positive finite"),
        ("autoclip:150", r"percentile must lie in \(0, 100\], received 150"),
        ("zscore:0", r"z must be a positive"),
    ],
)
def test_make_clipper_explains_mistakes(spec, message):
    with pytest.raises(ValueError, match=message):
        make_clipper(spec)


def test_constructor_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\), received 1"):
        ZScoreClipper(alpha=1)
    with pytest.raises(ValueError, match="warmup must be a positive int"):
        ZScoreClipper(warmup=0)
    with pytest.raises(ValueError, match="history must be a positive int or None"):
        AutoClipper(history=0)
    with pytest.raises(ValueError, match="keeps no state"):
        NormClipper(1.0).load_state_dict({"history": []})
