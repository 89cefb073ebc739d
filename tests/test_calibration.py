"""cifar_model.calibration's math on synthetic data with known answers, and train.calibrate fitting on
the validation hold-out only (never the test split)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_model import Classifier, CifarCNN
from cifar_model import calibration as cal
from train import calibrate
from train.data import Cifar
from train.recipe import split_train_val


# The fits here are small: one thread is faster than two that contend with the rest of the suite.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- to_probabilities ---------------------------------------------------------------------------


def test_to_probabilities_is_the_tempered_softmax_and_keeps_the_argmax() -> None:
    z = torch.randn(300, 10, generator=_gen(), dtype=torch.float64) * 4
    for t in (0.3, 1.0, 2.5):
        p = cal.to_probabilities(z, t)
        assert p.dtype == torch.float32
        assert torch.allclose(p.sum(dim=1), torch.ones(300), atol=1e-6)
        assert torch.equal(p.argmax(dim=1), z.argmax(dim=1))
        assert torch.allclose(p, torch.softmax(z / t, dim=1).float(), atol=1e-7)
    assert torch.allclose(cal.to_probabilities(z[0]), torch.softmax(z[0], dim=0).float())  # one row, no batch
    with pytest.raises(ValueError):
        cal.to_probabilities(z, 0.0)


def test_top_label_map_sets_the_top_probability_and_never_changes_the_answer() -> None:
    z = torch.randn(2000, 10, generator=_gen(1)) * 3
    z[:50, 1] = z[:50, 0] + 1e-4  # near ties, where lowering the top could hand the answer over
    harsh = [[0.1, 0.11], [0.5, 0.12], [0.99999, 0.2]]  # pulls every confidence down to 0.11-0.2
    p = cal.to_probabilities(z, 0.7, top_label_map=harsh)
    assert torch.allclose(p.sum(dim=1), torch.ones(len(z)), atol=1e-5)
    assert torch.equal(p.argmax(dim=1), z.argmax(dim=1))
    # Away from the guard, the top probability is exactly the knots' interpolation (in log-odds).
    knots = [[0.1, 0.15], [0.5, 0.4], [0.99999, 0.9]]
    p = cal.to_probabilities(z, 0.7, top_label_map=knots)
    q = cal.to_probabilities(z, 0.7)
    top = q.max(dim=1).values.double()
    xs, ys = (torch.logit(torch.tensor(v, dtype=torch.float64)).numpy() for v in zip(*knots))
    expected = torch.sigmoid(torch.from_numpy(np.interp(torch.logit(top).numpy(), xs, ys)))
    second = q.topk(2, dim=1).values[:, 1].double()
    free = expected > 1.01 * second / (1 - top + second)  # the guard does not bind
    assert free.sum() > 1000
    assert torch.allclose(p.max(dim=1).values.double()[free], expected[free], atol=1e-5)
    # The other classes keep their ratios.
    ratio = (p[:, :] / q[:, :]).double()
    others = torch.ones_like(p, dtype=torch.bool)
    others[torch.arange(len(p)), q.argmax(dim=1)] = False
    r = ratio[others].view(len(p), 9)
    assert torch.allclose(r, r[:, :1].expand_as(r), rtol=1e-3)


def test_top_label_map_rejects_bad_knots() -> None:
    z = torch.zeros(2, 3)
    for bad in ([[0.5, 0.5]], [[0.2, 0.3], [0.1, 0.4]], [[0.2, 0.5], [0.4, 0.3]], [[0.0, 0.5], [0.5, 0.6]],
                [[0.2, float("nan")], [0.5, 0.6]], [[0.2, 0.3, 0.4], [0.5, 0.6, 0.7]], [[0.2, "0.3"], [0.5, 0.6]],
                [[0.2, True], [0.5, 0.6]]):
        with pytest.raises((ValueError, TypeError)):
            cal.to_probabilities(z, 1.0, top_label_map=bad)
        with pytest.raises((ValueError, TypeError)):
            cal.check_knots(bad)
    cal.check_knots([[0.2, 0.3], [0.5, 0.3]])  # flat stretches are allowed


# --- the measures -------------------------------------------------------------------------------


def _calibrated_sample(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities whose top class (class 0) is right exactly with its stated probability."""
    g = _gen(seed)
    conf = 0.1 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    probs = torch.empty(n, 10, dtype=torch.float64)
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 9).unsqueeze(1)
    right = torch.rand(n, generator=g, dtype=torch.float64) < conf
    labels = torch.where(right, 0, torch.randint(1, 10, (n,), generator=g))
    return probs, labels


def test_ece_of_perfectly_calibrated_probabilities_is_near_zero() -> None:
    probs, labels = _calibrated_sample(60_000, seed=2)
    assert cal.expected_calibration_error(probs, labels) < 0.01  # sampling noise alone is ~0.005
    # ...and the same pictures made over-confident are not.
    sharp = probs.clone()
    sharp[:, 0] = probs[:, 0].sqrt()
    sharp[:, 1:] = ((1 - sharp[:, 0]) / 9).unsqueeze(1)
    assert cal.expected_calibration_error(sharp, labels) > 0.05


def test_ece_hand_computed_overconfident_case() -> None:
    # Confidence 0.9 twice (one right: accuracy 0.5, gap 0.4); 0.7 twice (both right: gap 0.3).
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    labels = torch.tensor([0, 2, 0, 1])
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.3, abs=1e-6)
    # Bins are closed on the right: 0.5 belongs to (0.25, 0.5] with 4 bins, not to (0.5, 0.75].
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.75, 0.25, 0.0]])
    labels = torch.tensor([0, 1])  # the first right, the second wrong
    assert cal.expected_calibration_error(probs, labels, bins=4) == pytest.approx((0.5 + 0.75) / 2)
    table = cal.reliability_bins(probs, labels, bins=4)
    assert [n for _, _, n, _, _ in table] == [0, 1, 1, 0]


def test_nll_and_brier_hand_computed() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = np.array([0, 2])
    assert cal.negative_log_likelihood(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    # (0.3^2 + 0.2^2 + 0.1^2 + 0.1^2 + 0.6^2 + 0.7^2) / 2: summed over classes, averaged over pictures
    assert cal.brier_score(probs, labels) == pytest.approx(0.5)
    assert cal.brier_score(np.eye(3), np.arange(3)) == 0.0
    assert cal.quality(probs, labels) == {"ece": cal.expected_calibration_error(probs, labels),
                                          "nll": cal.negative_log_likelihood(probs, labels),
                                          "brier": cal.brier_score(probs, labels)}


# --- fitting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", [0.5, 2.0])
def test_fit_temperature_recovers_a_planted_temperature(planted: float) -> None:
    g = _gen(3)
    logits = torch.randn(10_000, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.multinomial(torch.softmax(logits / planted, dim=1), 1, generator=g).squeeze(1)
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(planted, rel=0.05)
    assert cal.fit_temperature(logits, labels) == t  # deterministic
    # It is the NLL minimum: nudging it either way does worse.
    nll = lambda t_: cal.negative_log_likelihood(cal.to_probabilities(logits, t_), labels)  # noqa: E731
    assert nll(t) < nll(t * 1.05) and nll(t) < nll(t / 1.05)


def test_fit_temperature_stops_at_its_bounds() -> None:
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert cal.fit_temperature(logits, torch.tensor([0, 1])) == pytest.approx(0.01)  # always right: sharpen
    assert cal.fit_temperature(logits, torch.tensor([1, 0])) == pytest.approx(100.0)  # always wrong: flatten


def test_fit_top_label_map_recovers_a_known_reliability_curve() -> None:
    # Two classes; the top probability x = sigmoid(a) is right with probability 0.5 + 2 (x - 0.5)^2 < x.
    g = _gen(4)
    a = torch.rand(4000, generator=g, dtype=torch.float64) * 4.5
    logits = torch.stack([a, torch.zeros_like(a)], dim=1)
    truth = lambda x: 0.5 + 2 * (x - 0.5) ** 2  # noqa: E731
    labels = (torch.rand(4000, generator=g, dtype=torch.float64) >= truth(torch.sigmoid(a))).long()
    knots = cal.fit_top_label_map(logits, labels, 1.0, steps=4)
    xs, ys = np.array(knots).T
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    for x in (0.65, 0.8, 0.95):
        assert np.interp(x, xs, ys) == pytest.approx(truth(x), abs=0.04)
    before = cal.expected_calibration_error(cal.to_probabilities(logits), labels)
    after = cal.expected_calibration_error(cal.to_probabilities(logits, top_label_map=knots), labels)
    assert before > 0.05 and after < 0.03


# --- the diagram and the unsure rule ---------------------------------------------------------------


def test_reliability_diagram_is_an_image_of_the_stated_size() -> None:
    probs, labels = _calibrated_sample(2000, seed=5)
    img = cal.reliability_diagram(probs, labels, title="synthetic")
    assert isinstance(img, Image.Image) and img.size == (480, 480) and img.mode == "RGB"
    colours = {c for _, c in img.getcolors(480 * 480)}
    assert (66, 110, 196) in colours  # the accuracy bars are drawn
    assert cal.reliability_diagram(probs, labels, size=320).size == (320, 320)


def test_unfamiliar_threshold_fires_on_the_chosen_share_of_held_out_pictures() -> None:
    gen = torch.Generator().manual_seed(0)
    val = torch.randn(1000, 10, generator=gen) * 3
    threshold = cal.fit_unfamiliar_threshold(val, rate=0.1)
    assert cal.is_unfamiliar(val, threshold).float().mean().item() == pytest.approx(0.1, abs=0.002)
    assert torch.allclose(cal.energy_score(val), torch.logsumexp(val, dim=1))
    # flat logits (no class stands out, whatever their softmax) fall below; one clear winner does not
    flat, clear = torch.full((10,), threshold - 3.0), torch.tensor([threshold + 1.0] + [0.0] * 9)
    assert cal.is_unfamiliar(flat, threshold) is True and cal.is_unfamiliar(clear, threshold) is False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Cifar]:
    """A random-weights folder trained (nominally) with val_size 15, seed 3, and a tiny dataset."""
    folder = tmp_path_factory.mktemp("calib") / "w"
    torch.manual_seed(0)
    CifarCNN(dropout=0.0).eval().save_pretrained(folder)
    # the shipped run's figures, as if that run had held out 15 pictures with seed 3
    metrics = json.loads((Path(__file__).resolve().parent.parent / "weights" / "metrics.json").read_text())
    metrics["config"].update(val_size=15, seed=3)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    rng = np.random.default_rng(0)
    data = Cifar(rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 60),
                 rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 20),
                 [f"c{i}" for i in range(10)], "synthetic")
    return folder, data


def test_calibrate_folder_fits_on_the_validation_holdout_only(tiny, monkeypatch) -> None:
    folder, data = tiny
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_fit = cal.fit_temperature

    def recording_fit(logits, labels):
        seen.append((torch.as_tensor(logits).clone(), torch.as_tensor(labels).clone()))
        return real_fit(logits, labels)

    monkeypatch.setattr(cal, "fit_temperature", recording_fit)
    seen_map: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_map = cal.fit_top_label_map

    def recording_map(logits, labels, temperature, **kwargs):
        seen_map.append((torch.as_tensor(logits).clone(), torch.as_tensor(labels).clone()))
        return real_map(logits, labels, temperature, **kwargs)

    monkeypatch.setattr(cal, "fit_top_label_map", recording_map)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader may find this minimal metrics.json incomplete
        out = calibrate.calibrate_folder(folder, data, log=lambda line: None)
        clf = Classifier.from_pretrained(folder, precision="fp32")
    assert len(seen) == 1
    fitted_logits, fitted_labels = seen[0]
    _, _, val_x, val_y = split_train_val(data.train_images, data.train_labels, 15, 3)
    assert torch.equal(fitted_labels, torch.from_numpy(val_y))
    assert torch.allclose(fitted_logits, clf.logits(torch.from_numpy(val_x)), atol=1e-5)
    assert len(seen_map) == 1 and torch.equal(seen_map[0][1], fitted_labels)
    assert torch.equal(seen_map[0][0], fitted_logits)  # the map too is fitted on the validation pictures
    test_logits = clf.logits(torch.from_numpy(data.test_images))
    assert not any(torch.allclose(row, t, atol=1e-5) for row in fitted_logits for t in test_logits)
    assert out["val_images"] == 15 and out["test_images"] == 20 and out["temperature"] == pytest.approx(
        real_fit(fitted_logits, fitted_labels))
    for key in ("temperature", "val_images", "test_images", *(f"val_{m}_{s}" for m in ("ece", "nll", "brier")
                for s in ("before", "after")), *(f"test_{m}_{s}" for m in ("accuracy", "ece", "nll", "brier")
                for s in ("before", "after"))):
        assert isinstance(out[key], (int, float)), key
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written without write=True


def test_calibrate_folder_write_updates_config_and_draws_the_diagram(tiny, tmp_path) -> None:
    src, data = tiny
    folder = tmp_path / "w"
    folder.mkdir()
    for p in src.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    old = json.loads((folder / "config.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = calibrate.calibrate_folder(folder, data, write=True, log=lambda line: None)
    new = json.loads((folder / "config.json").read_text())
    assert new["temperature"] == pytest.approx(out["temperature"], rel=1e-5)
    assert new["top_label_map"] == out["top_label_map"]
    calibration_keys = ("temperature", "top_label_map", "unfamiliar_below")
    assert {k: v for k, v in new.items() if k not in calibration_keys} == {
        k: v for k, v in old.items() if k not in calibration_keys}
    assert Image.open(folder / "reliability.png").size == (480, 480)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["temperature"] == pytest.approx(out["temperature"])
    assert metrics["calibration_images"] == out["val_images"]
    assert metrics["ece"] == pytest.approx(out["test_ece_after"])
    assert metrics["ece_uncalibrated"] == pytest.approx(out["test_ece_before"])
    assert "## Calibration" in (folder / "README.md").read_text()


def test_calibrate_refuses_a_folder_that_held_nothing_out(tiny, tmp_path, capsys) -> None:
    src, data = tiny
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"val_size": 0, "seed": 0}}))
    with pytest.raises(ValueError, match="held nothing out"):
        calibrate.calibrate_folder(tmp_path, data)
    assert calibrate.main([str(tmp_path), "--data", "unused"]) == 2
    assert "val_size is 0" in capsys.readouterr().err


def test_a_map_that_cannot_be_fitted_is_no_map_rather_than_a_broken_one() -> None:
    # Every picture above a confidence is right: the likelihood has no maximum (a small hold-out or a
    # strong model). The fit must give no map (the temperature alone), never knots that can't load.
    a = torch.rand(4000, generator=torch.Generator().manual_seed(17), dtype=torch.float64) * 4
    right = torch.rand(4000, generator=torch.Generator().manual_seed(18), dtype=torch.float64) < torch.where(
        a > 2, 1.0, 0.5)
    knots = cal.fit_top_label_map(torch.stack([a, torch.zeros_like(a)], 1), (~right).long(), 1.0)
    assert knots is None or (cal.check_knots(knots) is None and all(math.isfinite(y) for _, y in knots))
    assert knots is None
