"""Behaviour of cifar_model.calibration that mutation testing (python -m benchmarks.mutation) found
unchecked: the unsure rule on numpy input and at its threshold, fit_temperature at the ends of its range
and on logits that say nothing, fit_top_label_map's temperature, saturated pictures, sharp and
straight reliability curves, and quality()'s bins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cifar_model import calibration as cal


# The fits here are small: one thread is faster than two that contend with the rest of the suite.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the unsure rule --------------------------------------------------------------------------------


def test_to_probabilities_takes_numpy_lists_single_rows_and_logits_that_track_gradients() -> None:
    z = torch.randn(20, 10, generator=_gen(1), dtype=torch.float64) * 3
    knots = [[0.1, 0.2], [0.5, 0.4], [0.99, 0.9]]
    for kw in ({}, {"top_label_map": knots}):
        expected = cal.to_probabilities(z, 1.5, **kw)
        for form in (z.numpy(), z.tolist(), z.clone().requires_grad_(True)):
            assert torch.equal(cal.to_probabilities(form, 1.5, **kw), expected)
        # one picture's C logits, and a batch of batches (N x M x C), give what their rows give
        assert torch.allclose(cal.to_probabilities(z[3], 1.5, **kw), expected[3])
        assert torch.allclose(cal.to_probabilities(z.reshape(4, 5, 10), 1.5, **kw), expected.reshape(4, 5, 10))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, not -1"):
        cal.to_probabilities(z, -1)


def test_knots_may_come_as_a_float32_array() -> None:
    z = torch.randn(20, 10, generator=_gen(2)) * 3
    knots = [[0.1, 0.2], [0.5, 0.4], [0.99, 0.9]]
    assert torch.allclose(cal.to_probabilities(z, top_label_map=np.array(knots, dtype=np.float32)),
                          cal.to_probabilities(z, top_label_map=knots), atol=1e-6)


def test_a_top_probability_beyond_the_knots_gets_the_end_knot() -> None:
    knots = [[0.5, 0.45], [0.9, 0.8]]
    # top probabilities 0.2 and 0.3 (below the first x) -> 0.45; 0.95 (beyond the last) -> 0.8
    for top, want in ((0.2, 0.45), (0.3, 0.45), (0.5, 0.45), (0.95, 0.8), (0.9, 0.8)):
        p = torch.tensor([top] + [(1 - top) / 9] * 9, dtype=torch.float64)
        out = cal.to_probabilities(p.log(), top_label_map=knots)
        assert out[0].item() == pytest.approx(want, abs=1e-6), top
        assert torch.allclose(out[1:], torch.full((9,), (1 - want) / 9, dtype=torch.float32), atol=1e-6)


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_a_row_whose_other_classes_underflow_still_sums_to_one(classes: int) -> None:
    # logits 0 and -200: the others' softmax is exactly 0 in float32; a map that lowers the top to 0.9
    # hands the rest to the other classes in equal shares
    z = torch.full((classes,), -200.0)
    z[0] = 0.0
    assert cal.to_probabilities(z)[1:].eq(0).all()
    out = cal.to_probabilities(z, top_label_map=[[0.5, 0.5], [0.999, 0.9]])
    assert out[0].item() == pytest.approx(0.9)
    assert torch.allclose(out[1:], torch.full((classes - 1,), 0.1 / (classes - 1)))
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bad, message", [
    ([[0.2, "0.3"], [0.8, 0.9]], "^top_label_map: every x and y must be a number$"),
    ([[0.2, 0.3]], "^top_label_map must be at least two \\[x, y\\] pairs$"),
    ([[0.2, 0.3, 0.4], [0.8, 0.9, 0.95]], "^top_label_map must be at least two \\[x, y\\] pairs$"),
    ([[0.2, 0.3], [1.0, 0.9]], "^top_label_map: every x and y must be strictly between 0 and 1$"),
    ([[0.2, 0.0], [0.8, 0.9]], "^top_label_map: every x and y must be strictly between 0 and 1$"),
    ([[0.2, 0.3], [0.8, 1.0]], "^top_label_map: every x and y must be strictly between 0 and 1$"),
    ([[0.2, 0.3], [0.8, 1.5]], "^top_label_map: every x and y must be strictly between 0 and 1$"),
    ([[0.2, -0.5], [0.8, 0.9]], "^top_label_map: every x and y must be strictly between 0 and 1$"),
    ([[0.2, 0.3], [0.2, 0.4], [0.8, 0.9]], "^top_label_map: x must increase and y must not decrease$"),
    ([[0.2, 0.3], [0.6, 0.4], [0.5, 0.5]], "^top_label_map: x must increase and y must not decrease$"),
    ([[0.2, 0.3], [0.5, 0.6], [0.8, 0.5]], "^top_label_map: x must increase and y must not decrease$"),
])
def test_bad_knots_are_refused_saying_why(bad, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        cal.check_knots(bad)
    cal.check_knots([[0.2, 0.3], [0.5, 0.3], [0.8, 0.9]])  # a flat stretch of y is fine


def test_unsure_rule_takes_numpy_lists_and_logits_that_track_gradients() -> None:
    val = torch.randn(200, 10, generator=_gen(0), dtype=torch.float64) * 3
    expected = torch.logsumexp(val.float(), dim=1)
    for form in (val.numpy(), val.tolist(), val.clone().requires_grad_(True)):
        assert torch.allclose(cal.energy_score(form), expected)
        assert cal.fit_unfamiliar_threshold(form, 0.25) == pytest.approx(
            float(torch.quantile(expected.double(), 0.25)), rel=1e-6)
    assert cal.is_unfamiliar(np.zeros(10), 5.0) is True and cal.is_unfamiliar([9.0] + [0.0] * 9, 5.0) is False


def test_a_picture_exactly_at_the_threshold_is_not_unfamiliar() -> None:
    # "below the threshold": a score equal to it is not flagged (zeros: logsumexp = ln 10 in float32)
    score = float(torch.logsumexp(torch.zeros(10), dim=0))
    assert cal.is_unfamiliar(torch.zeros(10), score) is False
    assert cal.is_unfamiliar(torch.zeros(10), float(np.nextafter(np.float32(score), np.float32(np.inf)))) is True


# --- fit_temperature --------------------------------------------------------------------------------


def _planted(temperature: float, scale: float, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    logits = torch.randn(10_000, 10, generator=g, dtype=torch.float64) * scale
    labels = torch.multinomial(torch.softmax(logits / temperature, dim=1), 1, generator=g).squeeze(1)
    return logits, labels


def test_fit_temperature_finds_temperatures_near_the_ends_of_its_range() -> None:
    logits, labels = _planted(70.0, 200.0)
    assert cal.fit_temperature(logits, labels) == pytest.approx(70.0, rel=0.05)
    logits, labels = _planted(0.015, 0.04)
    assert cal.fit_temperature(logits, labels) == pytest.approx(0.015, rel=0.05)


def test_fit_temperature_returns_the_bound_when_the_best_lies_beyond_it() -> None:
    logits, labels = _planted(0.007, 0.02)  # the NLL minimum is near T = 0.007, below the range
    assert cal.fit_temperature(logits, labels) == 0.01
    logits, labels = _planted(200.0, 600.0)  # ...and near T = 200, above it
    assert cal.fit_temperature(logits, labels) == 100.0


def test_logits_that_cannot_tell_the_classes_apart_never_sharpen() -> None:
    # every temperature gives the same NLL: the fit must not pick the sharpest one
    logits = torch.zeros(50, 10)
    labels = torch.arange(50) % 10
    assert cal.fit_temperature(logits, labels) == 100.0


# --- fit_top_label_map ------------------------------------------------------------------------------


def _two_class(a: torch.Tensor, p_right: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits [a, 0] (top probability sigmoid(a), class 0 on top) whose top class is right
    with probability p_right."""
    logits = torch.stack([a, torch.zeros_like(a)], dim=1)
    right = torch.rand(len(a), generator=_gen(seed), dtype=torch.float64) < p_right
    return logits, (~right).long()


def _map(knots: list[list[float]], x: float) -> float:
    xs, ys = np.array(knots).T
    return float(np.interp(x, xs, ys))


def test_fit_top_label_map_is_a_map_of_the_tempered_top_probability() -> None:
    g = _gen(5)
    a = torch.rand(3000, generator=g, dtype=torch.float64) * 4
    logits, labels = _two_class(a, 0.5 + 0.4 * torch.sigmoid(a - 2), seed=6)
    # at temperature 2 the map is the one fitted on the halved logits at temperature 1
    assert cal.fit_top_label_map(logits, labels, 2.0) == cal.fit_top_label_map(logits / 2, labels, 1.0)


def test_fit_top_label_map_copes_with_pictures_it_is_certain_of() -> None:
    # 5% of the pictures have a top probability of exactly 1.0 (a logit gap of 60 in float64)
    g = _gen(7)
    a = torch.rand(4000, generator=g, dtype=torch.float64) * 4
    a[:200] = 60.0
    logits, labels = _two_class(a, torch.sigmoid(0.8 * a), seed=8)
    knots = cal.fit_top_label_map(logits, labels, 1.0, steps=4)
    assert np.isfinite(np.array(knots)).all()
    cal.check_knots(knots)
    assert _map(knots, 0.8) == pytest.approx(float(torch.sigmoid(0.8 * torch.logit(torch.tensor(0.8)))), abs=0.05)


def test_fit_top_label_map_follows_a_sharp_jump_in_accuracy() -> None:
    # Top probabilities 0.95-0.9975 (log-odds 3 to 6); right 55% of the time below log-odds 4.5, 97% above.
    g = _gen(9)
    a = 3 + torch.rand(20_000, generator=g, dtype=torch.float64) * 3
    logits, labels = _two_class(a, torch.where(a < 4.5, 0.55, 0.97), seed=10)
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    sig = lambda v: float(torch.sigmoid(torch.tensor(v)))  # noqa: E731
    for s, want in ((3.5, 0.55), (4.0, 0.55), (5.0, 0.97), (5.5, 0.97)):
        assert _map(knots, sig(s)) == pytest.approx(want, abs=0.04), s


def test_fit_top_label_map_follows_a_straight_reliability_curve() -> None:
    # right with probability sigmoid(0.5 a + 0.5): a straight line in log-odds (data: log-odds 0.5 to 4)
    g = _gen(11)
    a = 0.5 + torch.rand(8000, generator=g, dtype=torch.float64) * 3.5
    logits, labels = _two_class(a, torch.sigmoid(0.5 * a + 0.5), seed=12)
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    truth = lambda s: float(torch.sigmoid(torch.tensor(0.5 * s + 0.5)))  # noqa: E731
    for s in (1.0, 2.0, 3.0, 3.8):
        assert _map(knots, float(torch.sigmoid(torch.tensor(s)))) == pytest.approx(truth(s), abs=0.025), s
    assert knots[-1][0] == pytest.approx(0.9999)



def test_a_steep_fit_still_gives_knots_a_config_can_hold() -> None:
    # Right with probability sigmoid(6 (a - 1.5)): steep enough that the map's log-odds at 0.9999 are far
    # past 14, where sigmoid rounds to 1.0 at 6 decimals. The knots must stay a loadable map (y < 1).
    g = _gen(13)
    a = torch.rand(20_000, generator=g, dtype=torch.float64) * 3
    logits, labels = _two_class(a, torch.sigmoid(6 * (a - 1.5)), seed=14)
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    cal.check_knots(knots)
    assert knots[-1][1] == 0.999999
    assert _map(knots, float(torch.sigmoid(torch.tensor(2.0)))) == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))),
                                                                                abs=0.03)

# --- quality and the reliability table ----------------------------------------------------------------


def test_bins_are_closed_on_the_right_and_the_last_holds_the_surest() -> None:
    probs = np.array([[0.7, 0.3, 0.0], [0.99, 0.01, 0.0], [1.0, 0.0, 0.0]])  # float64 confidences
    table = cal.reliability_bins(probs, np.array([0, 0, 1]), bins=10)
    assert [n for _, _, n, _, _ in table] == [0, 0, 0, 0, 0, 0, 1, 0, 0, 2]  # 0.7 in (0.6, 0.7]
    assert table[9][3] == pytest.approx(0.995) and table[9][4] == 0.5
    assert len(cal.reliability_bins(probs, np.array([0, 0, 1]))) == 15  # the default: 15 bins
    assert table[0][2] == 0 and math.isnan(table[0][3]) and math.isnan(table[0][4])


def test_ece_and_quality_use_15_bins_unless_told_otherwise() -> None:
    # confidences 0.61 (right) and 0.63 (wrong): in one bin of 15 ((0.6, 0.667]), where the gap is
    # |0.62 - 0.5|; in two bins of 16 ((0.5625, 0.625] and (0.625, 0.6875]): (0.39 + 0.63) / 2
    probs = torch.tensor([[0.61, 0.39], [0.63, 0.37]])
    labels = torch.tensor([0, 1])
    assert cal.quality(probs, labels)["ece"] == pytest.approx(0.12)
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.12)
    assert cal.quality(probs, labels, bins=16)["ece"] == pytest.approx(0.51)


def test_below_the_data_the_map_runs_straight_down_to_chance() -> None:
    # ten classes, top probabilities 0.23-0.94 (log-odds -1.2 to 2.8), right as often as they say: below
    # the data the map runs straight in log-odds to x = 1/10 -> 0.1 (indifferent logits stay indifferent)
    g = _gen(13)
    a = 1 + torch.rand(6000, generator=g, dtype=torch.float64) * 4
    logits = torch.zeros(6000, 10, dtype=torch.float64)
    logits[:, 0] = a
    top = torch.softmax(logits, dim=1)[:, 0]
    right = torch.rand(6000, generator=_gen(14), dtype=torch.float64) < top
    labels = torch.where(right, 0, 1 + torch.arange(6000) % 9)
    knots = np.array(cal.fit_top_label_map(logits, labels, 1.0))
    assert knots[0] == pytest.approx([0.1, 0.1], abs=1e-6)
    lx, ly = np.log(knots / (1 - knots)).T
    below = lx < float(torch.logit(top).quantile(0.01)) - 0.05
    assert below.sum() >= 5
    slope, cut = np.polyfit(lx[below], ly[below], 1)
    assert np.abs(ly[below] - (slope * lx[below] + cut)).max() < 1e-4  # straight
    assert slope > 0.5 and cut == pytest.approx(lx[0] * (1 - slope), abs=1e-3)  # through (1/10, 1/10)
    assert np.interp(0.5, *knots.T) == pytest.approx(0.5, abs=0.04)  # and calibrated inside the data


def test_where_accuracy_dips_the_map_does_not_promise_the_peak() -> None:
    # right 90% at log-odds 1-2, 50% at 2-3, 90% at 3-4: an increasing map must pool the first two
    # stretches (about 70%), not hold 90% over the dip
    g = _gen(15)
    a = 1 + torch.rand(12_000, generator=g, dtype=torch.float64) * 3
    logits, labels = _two_class(a, torch.where((a > 2) & (a < 3), 0.5, 0.9), seed=16)
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    assert _map(knots, float(torch.sigmoid(torch.tensor(2.5)))) < 0.8


# --- what the scoring functions accept ----------------------------------------------------------------


def test_scores_take_python_lists_at_full_precision_and_probabilities_that_track_gradients() -> None:
    # 0.7 as a python float is 0.7 in float64 and lands in (0.6, 0.7]; in float32 it would be 0.70000005
    table = cal.reliability_bins([[0.7, 0.3, 0.0]], [0], bins=10)
    assert [n for _, _, n, _, _ in table][6:8] == [1, 0]
    assert table[6][3] == 0.7
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2])
    assert cal.negative_log_likelihood(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    assert cal.brier_score(probs, labels) == pytest.approx(0.5)
    assert cal.expected_calibration_error(probs, labels) == pytest.approx((0.3 + 0.6) / 2)


def test_one_picture_is_enough_and_none_is_refused() -> None:
    assert cal.negative_log_likelihood([[0.25, 0.75]], [1]) == pytest.approx(-math.log(0.75))
    assert cal.expected_calibration_error([[0.25, 0.75]], [1]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="^no pictures$"):
        cal.brier_score(np.zeros((0, 3)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("probs, labels, shapes", [
    (np.full((3, 2), 0.5), np.zeros((3, 1), dtype=int), "got (3, 2) and (3, 1)"),  # labels as a column
    (np.full(3, 0.5), np.zeros(3, dtype=int), "got (3,) and (3,)"),  # one probability per picture
    (np.full((3, 2), 0.5), np.zeros(2, dtype=int), "got (3, 2) and (2,)"),
])
def test_mismatched_shapes_are_refused_naming_them(probs, labels, shapes: str) -> None:
    for score in (cal.negative_log_likelihood, cal.brier_score, cal.expected_calibration_error):
        with pytest.raises(ValueError) as err:
            score(probs, labels)
        assert str(err.value) == f"expected N x C probabilities and N labels, {shapes}"

