"""Calibration fitting and scoring (train/calibrate.py): fits recover what was planted in synthetic data,
the measures match hand-computed cases, and a weights folder is calibrated on its validation hold-out
only, never on the test split. Fitted curves are checked with tolerances, never knot for knot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from torch import nn

from cifar_model import CLASSES, CifarCNN, Config, Metrics, Rule, load, save
from cifar_model.weights import write_record
from train import calibrate as cal
from train.data import Cifar
from train.recipe import split_train_val

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_real_fit = cal.fit


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _map(knots: list[list[float]], x: float) -> float:
    """The map at top probability x, interpolated in log-odds as the rule does."""
    lx, ly = (np.log(v / (1 - v)) for v in np.array(knots).T)
    return _sig(float(np.interp(math.log(x / (1 - x)), lx, ly)))


def _two_class(a: torch.Tensor, p_right: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [a, 0] (top probability sigmoid(a) on class 0) whose top class is right with probability p_right."""
    right = torch.rand(len(a), generator=_gen(seed), dtype=torch.float64) < p_right
    return torch.stack([a, torch.zeros_like(a)], dim=1), (~right).long()


def _loadable(knots) -> None:
    Config(list(CLASSES), [0.5] * 3, [0.25] * 3, top_label_map=knots)  # raises if a config can't hold them
    assert np.isfinite(np.array(knots)).all() and len(knots) == 48


@pytest.mark.parametrize("planted, scale, expected", [
    (0.5, 3.0, 0.5), (2.0, 3.0, 2.0),
    (70.0, 200.0, 70.0), (0.015, 0.04, 0.015),  # near the ends of the range
    (0.007, 0.02, 0.01), (200.0, 600.0, 100.0),  # beyond them: the bound
])
def test_fit_temperature_recovers_a_planted_temperature_within_its_bounds(planted, scale, expected):
    g = _gen(3)
    logits = torch.randn(10_000, 10, generator=g, dtype=torch.float64) * scale
    labels = torch.multinomial(torch.softmax(logits / planted, dim=1), 1, generator=g).squeeze(1)
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(expected, rel=0.05 if expected == planted else 1e-12)
    if expected == planted:  # the NLL minimum: nudging it either way does worse
        nll = lambda t_: float(torch.nn.functional.cross_entropy(logits / t_, labels))  # noqa: E731
        assert nll(t) < nll(t * 1.02) and nll(t) < nll(t / 1.02)


@pytest.mark.parametrize("logits, labels, expected", [
    ([[5.0, 0.0], [0.0, 5.0]], [0, 1], 0.01),  # always right: as sharp as allowed
    ([[5.0, 0.0], [0.0, 5.0]], [1, 0], 100.0),  # always wrong: as flat as allowed
    ([[0.0, 0.0], [0.0, 0.0]], [0, 1], 100.0),  # logits that say nothing never sharpen
    # four pictures at logits [d, 0], three right: the NLL is least where sigmoid(d / T) = 3/4, i.e. T = d / ln 3
    ([[100.5 * math.log(3), 0.0]] * 4, [0, 0, 0, 1], 100.0), ([[99.5 * math.log(3), 0.0]] * 4, [0, 0, 0, 1], 99.5),
    ([[0.0099 * math.log(3), 0.0]] * 4, [0, 0, 0, 1], 0.01), ([[0.0101 * math.log(3), 0.0]] * 4, [0, 0, 0, 1], 0.0101),
])
def test_fit_temperature_stops_at_its_bounds(logits, labels, expected):
    assert cal.fit_temperature(torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)) == pytest.approx(
        expected, rel=1e-9)


def test_fit_top_label_map_recovers_a_known_reliability_curve():
    # the top probability x = sigmoid(a) is right with probability 0.5 + 2 (x - 0.5)^2 < x
    a = torch.rand(4000, generator=_gen(4), dtype=torch.float64) * 4.5
    truth = lambda x: 0.5 + 2 * (x - 0.5) ** 2  # noqa: E731
    logits, labels = _two_class(a, truth(torch.sigmoid(a)), seed=5)
    knots = cal.fit_top_label_map(logits, labels, 1.0, steps=4)
    _loadable(knots)
    xs, ys = np.array(knots).T
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    assert (xs[0], xs[-1]) == pytest.approx((0.5, 0.9999))  # from chance (two classes) to 0.9999
    for x in (0.65, 0.8, 0.95):
        assert _map(knots, x) == pytest.approx(truth(x), abs=0.04)
    assert len(cal.fit_top_label_map(logits, labels, 1.0, steps=4, points=10)) == 10


def test_where_every_sure_picture_is_right_the_map_stays_finite_and_monotone():
    # right half the time below log-odds 2, always above: the likelihood alone has no maximum there
    a = torch.rand(4000, generator=_gen(17), dtype=torch.float64) * 4
    logits, labels = _two_class(a, torch.where(a > 2, 1.0, 0.5), seed=18)
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    _loadable(knots)
    assert np.all(np.diff(np.array(knots)[:, 1]) >= 0)
    assert _map(knots, _sig(3.5)) > 0.97 and _map(knots, _sig(1.0)) == pytest.approx(0.5, abs=0.1)


def test_pictures_it_is_certain_of_leave_the_map_finite():
    a = torch.rand(4000, generator=_gen(7), dtype=torch.float64) * 4
    a[:200] = 60.0  # 5% with a top probability of exactly 1.0 in float64
    logits, labels = _two_class(a, torch.sigmoid(0.8 * a), seed=8)
    knots = cal.fit_top_label_map(logits, labels, 1.0, steps=4)
    _loadable(knots)
    assert _map(knots, 0.8) == pytest.approx(_sig(0.8 * math.log(4)), abs=0.05)


@pytest.mark.filterwarnings("ignore:std")
def test_a_one_picture_hold_out_still_gives_a_loadable_map():
    _loadable(cal.fit_top_label_map(torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([0]), 1.0))


def test_the_map_is_one_of_the_tempered_top_probability():
    a = torch.rand(3000, generator=_gen(6), dtype=torch.float64) * 4
    logits, labels = _two_class(a, 0.5 + 0.4 * torch.sigmoid(a - 2), seed=7)
    halved = cal.fit_top_label_map(logits / 2, labels, 1.0)
    np.testing.assert_allclose(cal.fit_top_label_map(logits, labels, 2.0), halved, atol=1e-6)


def test_below_the_data_the_map_runs_straight_down_to_chance():
    # ten classes, top probabilities 0.23-0.94, right as often as they say: below the data the map runs
    # straight in log-odds to x = y = 1/10 (indifferent logits stay indifferent)
    a = 1 + torch.rand(6000, generator=_gen(13), dtype=torch.float64) * 4
    logits = torch.zeros(6000, 10, dtype=torch.float64)
    logits[:, 0] = a
    top = torch.softmax(logits, dim=1)[:, 0]
    right = torch.rand(6000, generator=_gen(14), dtype=torch.float64) < top
    knots = np.array(cal.fit_top_label_map(logits, torch.where(right, 0, 1 + torch.arange(6000) % 9), 1.0))
    assert knots[0] == pytest.approx([0.1, 0.1], abs=1e-6)
    lx, ly = np.log(knots / (1 - knots)).T
    below = lx < float(torch.logit(top).quantile(0.01)) - 0.05
    assert below.sum() >= 5
    slope, cut = np.polyfit(lx[below], ly[below], 1)
    assert np.abs(ly[below] - (slope * lx[below] + cut)).max() < 1e-4  # straight
    assert slope > 0.5 and cut == pytest.approx(lx[0] * (1 - slope), abs=1e-3)  # through (1/10, 1/10)
    assert _map(knots.tolist(), 0.5) == pytest.approx(0.5, abs=0.04)  # and calibrated inside the data


def test_a_steep_or_jumping_curve_is_followed_and_stays_loadable():
    a = 3 + torch.rand(20_000, generator=_gen(9), dtype=torch.float64) * 3
    logits, labels = _two_class(a, torch.where(a < 4.5, 0.55, 0.97), seed=10)  # a jump at log-odds 4.5
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    for s, want in ((3.5, 0.55), (4.0, 0.55), (5.0, 0.97), (5.5, 0.97)):
        assert _map(knots, _sig(s)) == pytest.approx(want, abs=0.04), s
    a = torch.rand(20_000, generator=_gen(11), dtype=torch.float64) * 3
    logits, labels = _two_class(a, torch.sigmoid(6 * (a - 1.5)), seed=12)  # log-odds past 14 at x = 0.9999
    knots = cal.fit_top_label_map(logits, labels, 1.0)
    _loadable(knots)
    assert knots[-1][1] == pytest.approx(1 - 1e-6) and _map(knots, _sig(2.0)) == pytest.approx(_sig(3.0), abs=0.03)


def test_reliability_bins_hold_low_below_and_high_inclusive():
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0], [0.6, 0.4]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 0, 0])  # right, right, wrong, right, right
    # 4 bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]
    assert cal.reliability(probs, labels, bins=4) == [
        [0, 0.0, 0.0], [1, 0.5, 1.0], [3, pytest.approx(0.7), pytest.approx(2 / 3)], [1, 1.0, 1.0]]
    assert len(cal.reliability(probs, labels)) == 15
    just_above = torch.tensor([[1 / 3 + 1e-9, 1 / 3, 1 / 3 - 1e-9]], dtype=torch.float64)  # past 5/15 in float64
    assert [n for n, _, _ in cal.reliability(just_above, torch.tensor([0]))][4:6] == [0, 1]


def test_quality_hand_computed():
    # confidence 0.9 twice (one right: gap 0.4); 0.7 twice (both right: gap 0.3)
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    labels = torch.tensor([0, 2, 0, 1])
    q = cal.quality(probs, labels)
    assert q["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)
    assert q["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.05) + math.log(0.7) + math.log(0.7)) / 4)
    brier = [0.01 + 0.01, 0.81 + 0.0025 + 0.9025, 0.09 + 0.04 + 0.01, 0.04 + 0.09 + 0.01]
    assert q["brier"] == pytest.approx(sum(brier) / 4)
    # a true class at probability 0 costs -ln(1e-12), not infinity
    assert cal.quality(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))["nll"] == pytest.approx(12 * math.log(10))
    # 15 bins: 0.61 (right) and 0.63 (wrong) share (0.6, 0.667], where the gap is |0.62 - 0.5|
    assert cal.quality(torch.tensor([[0.61, 0.39], [0.63, 0.37]]), torch.tensor([0, 1]))["ece"] == pytest.approx(0.12)


def _rule(threshold: float | None, knots=None) -> Rule:
    config = Config(["a", "b", "c"], [0.5] * 3, [0.25] * 3, temperature=2.0, top_label_map=knots,
                    unsure_threshold=threshold)
    return Rule(nn.Identity(), config)


def test_figures_score_the_rule_on_the_test_logits():
    z = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 6.0]])
    labels = torch.tensor([0, 2, 0, 1, 2])  # right, wrong, right (tie: class 0), wrong, right
    score = -torch.logsumexp(z, dim=1)  # unsure above the score of row 3: rows 1 and 2 only
    got = cal.figures(_rule(float(score[3])), z, labels)
    probs = torch.softmax(z / 2, dim=1)
    assert got["temperature"] == 2.0
    assert {k: got[k] for k in ("ece", "nll", "brier")} == pytest.approx(cal.quality(probs, labels))
    assert {k: got[f"{k}_uncalibrated"] for k in ("ece", "nll", "brier")} == pytest.approx(
        cal.quality(torch.softmax(z, dim=1), labels))
    np.testing.assert_allclose(got["reliability"], cal.reliability(probs, labels), rtol=1e-6)
    assert (got["unsure_rate"], got["unsure_accuracy"], got["sure_accuracy"]) == pytest.approx((0.4, 0.5, 2 / 3))
    never = cal.figures(_rule(None), z, labels)
    assert (never["unsure_rate"], never["unsure_accuracy"], never["sure_accuracy"]) == (0.0, None, 0.6)
    always = cal.figures(_rule(-100.0), z, labels)
    assert (always["unsure_rate"], always["unsure_accuracy"], always["sure_accuracy"]) == (1.0, 0.6, None)
    knots = [[1 / 3, 0.3], [0.9, 0.8]]
    assert cal.figures(_rule(None, knots), z, labels)["nll"] == pytest.approx(
        cal.quality(_rule(None, knots).calibrate(z), labels)["nll"])


def test_fit_gives_the_config_fields_with_the_unsure_rule_firing_on_its_share_of_validation():
    g = _gen(0)
    logits = torch.randn(1000, 10, generator=g) * 3
    labels = torch.multinomial(torch.softmax(logits / 1.5, dim=1), 1, generator=g).squeeze(1)
    got = cal.fit(logits, labels)
    assert set(got) == {"temperature", "top_label_map", "unsure_threshold"}
    assert got["temperature"] == pytest.approx(1.5, rel=0.1)
    _loadable(got["top_label_map"])
    assert int((-torch.logsumexp(logits, dim=1) > got["unsure_threshold"]).sum()) == 95
    assert Config(list(CLASSES), [0.5] * 3, [0.25] * 3, **got).unsure_threshold == got["unsure_threshold"]


def _metrics(**config) -> Metrics:
    return Metrics(test_accuracy=0.1, test_images=20, per_class_accuracy={c: 0.1 for c in CLASSES},
                   confusion_matrix=[[2] + [0] * 9] * 10, dataset="synthetic", data_source="synthetic",
                   train_images=45, train_seconds=1.0, hardware="CPU", parameters=2_211_338, torch="2",
                   config={"epochs": 1} | config, history=[])


@pytest.fixture()
def folder(tmp_path) -> tuple:
    """A random-weights folder whose run held out 15 of the 60 training pictures (seed 3), and its data."""
    torch.manual_seed(0)
    save(tmp_path, CifarCNN().eval(), Config(list(CLASSES), [0.45, 0.5, 0.4], [0.25, 0.22, 0.28]))
    write_record(_metrics(val_size=15, seed=3), tmp_path / "metrics.json")
    rng = np.random.default_rng(0)
    data = Cifar(rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 60),
                 rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 20), list(CLASSES), "s")
    return tmp_path, data


def _flip_logits(model, pixels, mean, std) -> torch.Tensor:
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / \
        torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return (model(x) + model(x.flip(3))) / 2


def test_logits_of_are_the_flip_averaged_logits_in_batches(folder):
    path, data = folder
    weights = load(path)
    expected = _flip_logits(weights.model, data.test_images, [0.45, 0.5, 0.4], [0.25, 0.22, 0.28])
    torch.testing.assert_close(cal.logits_of(weights.model, weights.config, data.test_images, batch=7), expected,
                               rtol=1e-4, atol=1e-5)


def test_calibrate_folder_fits_on_the_validation_holdout_only(folder, monkeypatch):
    path, data = folder
    seen, lines = [], []
    monkeypatch.setattr(cal, "fit", lambda logits, labels: seen.append((logits, labels)) or _real_fit(logits, labels))
    monkeypatch.setattr(cal.datasets, "load", lambda spec: lines.append(f"loaded {spec}") or data)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    out = cal.calibrate_folder(path, path.parent / "cifar.tar.gz", log=lines.append)  # the data from where it lies
    assert lines[0] == f"loaded {path.parent / 'cifar.tar.gz'}"
    _, _, val_x, val_y = split_train_val(data.train_images, data.train_labels, 15, 3)
    [(logits, labels)] = seen
    assert torch.equal(labels, torch.from_numpy(val_y))
    model = load(path).model
    torch.testing.assert_close(logits, _flip_logits(model, val_x, [0.45, 0.5, 0.4], [0.25, 0.22, 0.28]),
                               rtol=1e-4, atol=1e-5)
    assert out["config"].temperature == _real_fit(logits, labels)["temperature"]
    assert 0 <= out["ece"] <= 1 and out["reliability"] and "unsure_rate" in out
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # nothing written without write
    assert "15 validation pictures" in lines[1] and "val_size 15, seed 3" in lines[1]
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [float(c.strip(" %")) for c in line.split("|")[3:-1]]
            for line in lines if line.startswith(("| validation |", "| test |"))}  # accuracy, mean top, ECE, NLL, Brier
    assert len(rows) == 6
    tempered = cal.quality(torch.softmax(_flip_logits(model, data.test_images, [0.45, 0.5, 0.4], [0.25, 0.22, 0.28])
                                         / out["config"].temperature, 1), torch.from_numpy(data.test_labels))
    for name, q in (("none", {k: out[f"{k}_uncalibrated"] for k in ("ece", "nll")}), ("temperature", tempered),
                    ("temperature + map", out)):
        assert rows["test", name][2:4] == pytest.approx([100 * q["ece"], q["nll"]], abs=6e-3), name


def test_calibrate_folder_write_updates_config_metrics_and_card(folder):
    path, data = folder
    write_record(_metrics(val_size=15), path / "metrics.json")  # no seed: the default seed 0
    old_config, lines = json.loads((path / "config.json").read_text()), []
    out = cal.calibrate_folder(path, data, write=True, log=lines.append)
    assert "val_size 15, seed 0" in lines[0]
    config = json.loads((path / "config.json").read_text())
    assert config["temperature"] == out["config"].temperature and config["top_label_map"] == out["config"].top_label_map
    assert config["unsure_threshold"] == out["config"].unsure_threshold is not None
    assert {k: config[k] for k in ("classes", "mean", "std")} == {k: old_config[k] for k in ("classes", "mean", "std")}
    metrics = json.loads((path / "metrics.json").read_text())
    for key in ("temperature", "ece", "nll", "brier", "ece_uncalibrated", "unsure_rate"):
        assert metrics[key] == out[key], key
    assert metrics["config"] == {"epochs": 1, "val_size": 15} and metrics["test_accuracy"] == 0.1
    card = ModelCard.load(path / "README.md")
    assert "## Calibration" in card.text
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["ece"] == out["ece"]


def test_calibrate_refuses_a_folder_that_held_nothing_out(folder, capsys):
    path, data = folder
    for config in ({"val_size": 0}, {}):  # no val_size: nothing held out
        write_record(_metrics(**config), path / "metrics.json")
        with pytest.raises(ValueError) as err:
            cal.calibrate_folder(path, data)
        assert "metrics.json" in str(err.value) and "held nothing out" in str(err.value)
    assert cal.main([str(path), "--data", "unused"]) == 2
    assert "held nothing out" in capsys.readouterr().err


def test_calibrate_command_line(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cal, "calibrate_folder", lambda *a, **kw: calls.append((a, kw)))
    assert cal.main([str(tmp_path), "--data", "cifar.tar.gz", "--write"]) == 0
    assert cal.main([str(tmp_path), "--data", "cifar.tar.gz"]) == 0
    assert calls == [((tmp_path, "cifar.tar.gz"), {"write": True}), ((tmp_path, "cifar.tar.gz"), {"write": False})]
    with pytest.raises(SystemExit):  # --data is required: the hold-out is rebuilt from the training data
        cal.main([str(tmp_path)])
