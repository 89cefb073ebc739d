"""The inference rule (cifar_model/classifier.py), Grad-CAM (cifar_model/explain.py) and the command line
(cifar_model/__main__.py). Every expectation is computed here: a plain eval forward, the calibration
written out in float64 with numpy's interpolation, Grad-CAM with hooks. float32 unless bf16 is the point."""

from __future__ import annotations

import copy
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cifar_model import CLASSES, Classifier, CifarCNN, Config, Rule, Weights, grad_cam, load, save, to_uint8, tta_logits
from cifar_model import classifier as clf_mod
from cifar_model.__main__ import main as cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Values no default matches, so a dropped argument falling back to a default shows.
MEAN, STD = [0.45, 0.5, 0.4], [0.25, 0.22, 0.28]
NAMES = [f"label {c}" for c in reversed(CLASSES)]
T = 1.7
KNOTS = [[0.15, 0.12], [0.3, 0.2], [0.6, 0.5], [0.9, 0.7], [0.9999999, 0.9999]]  # the last in float32: 1 - 1.2e-7
THRESHOLD = -2.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pixels(n: int, seed: int) -> np.ndarray:
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=_gen(seed)).numpy()


def _normalise(pixels, mean, std) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W, written out here (not preprocess.normalize)."""
    x = torch.as_tensor(pixels).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _eval(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).float().eval()(x)


def _flip_logits(model: nn.Module, pixels, mean=MEAN, std=STD) -> torch.Tensor:
    x = _normalise(pixels, mean, std)
    return (_eval(model, x) + _eval(model, x.flip(3))) / 2  # NCHW: axis 3 is left <-> right


def _calibrated(logits: torch.Tensor, t: float, knots) -> np.ndarray:
    """The calibration written out: tempered softmax; the top probability moved along the knots (linear
    in log-odds, flat beyond the ends, the runner-up kept 1e-3 below it); the others keep their shares."""
    z = logits.double() / t
    if knots is None:
        return torch.softmax(z, dim=1).numpy()
    out = np.empty(z.shape)
    lx, ly = (np.log(v / (1 - v)) for v in np.array(knots, dtype=np.float64).T)
    for i, row in enumerate(z):
        k = int(row.argmax())
        others = torch.cat([row[:k], row[k + 1:]])
        odds = float(row[k] - torch.logsumexp(others, 0))  # log(top / (1 - top)), exact even where top rounds to 1
        top = 1 / (1 + np.exp(-np.interp(odds, lx, ly)))
        share = torch.softmax(others, 0).numpy()
        lead = share.max() * 1.001
        top = max(top, lead / (1 + lead))
        out[i] = np.insert(share * (1 - top), k, top)
    return out


def _random_bn(model: nn.Module, seed: int) -> nn.Module:
    """Trained-looking BatchNorm statistics and affine parameters, so folding them changes the arithmetic."""
    g = _gen(seed)
    with torch.no_grad():
        for m in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5), m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.5), m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


CONFIG = Config(NAMES, MEAN, STD, temperature=T, top_label_map=KNOTS, unsure_threshold=THRESHOLD)


@pytest.fixture(scope="module")
def net() -> CifarCNN:
    torch.manual_seed(0)
    return _random_bn(CifarCNN(), 1).eval()


@pytest.fixture(scope="module")
def bundled() -> Weights:
    return load()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Five photos of five classes as the network sees them (5 x 32 x 32 x 3 uint8)."""
    return np.stack([to_uint8(EXAMPLES / f"{c}_1.jpg") for c in ("cat", "airplane", "ship", "frog", "truck")])


def test_tta_logits_average_each_picture_and_its_mirror(net):
    pixels = _pixels(5, 10)
    got = tta_logits(net, torch.from_numpy(pixels), MEAN, STD)
    expected = _flip_logits(net, pixels)
    assert got.dtype == torch.float32 and got.shape == (5, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    x = _normalise(pixels, MEAN, STD)
    # it can tell the mirror from the picture alone, an upside-down picture and the default normalisation
    upside_down, greyish = (_eval(net, x) + _eval(net, x.flip(2))) / 2, _flip_logits(net, pixels, [0.5] * 3, [0.25] * 3)
    for other in (_eval(net, x), upside_down, greyish):
        assert (got - other).abs().max() > 10 * (got - expected).abs().max()


def _logits(n: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    z = torch.randn(n, 10, generator=_gen(seed)) * scale
    z[:3] = torch.tensor([0.0] * 10)  # top probability 1/10: below the first knot
    z[1, 4], z[2, 7] = 40.0, 0.3  # far beyond the last knot; a top probability just above chance
    return z


@pytest.mark.parametrize("knots", [None, KNOTS])
def test_calibration_is_the_temperature_then_the_top_label_map(net, knots):
    z = _logits(500, 20)
    got = Rule(net, replace(CONFIG, top_label_map=knots)).calibrate(z)
    np.testing.assert_allclose(got.numpy(), _calibrated(z, T, knots), rtol=0, atol=2e-6)
    assert torch.equal(got.argmax(1), z.argmax(1))
    np.testing.assert_allclose(got.sum(1).numpy(), 1, atol=1e-6)
    if knots:  # both parts of the calibration count
        for t, k in ((1.0, knots), (T, None)):
            assert np.abs(got.numpy() - _calibrated(z, t, k)).max() > 0.05
    else:
        np.testing.assert_allclose(Rule(net, Config(NAMES, MEAN, STD)).calibrate(z).numpy(), _calibrated(z, 1.0, None),
                                   atol=1e-6)


def test_a_map_that_lowers_the_top_never_hands_the_answer_to_the_runner_up(net):
    z = torch.randn(300, 10, generator=_gen(21)) * 3
    z[:50, 1] = z[:50, 0] + 1e-3 * torch.rand(50, generator=_gen(22))  # near ties
    harsh = [[0.1, 0.101], [0.5, 0.11], [0.9999, 0.15]]  # every top probability down to 0.10-0.15
    got = Rule(net, replace(CONFIG, top_label_map=harsh)).calibrate(z)
    np.testing.assert_allclose(got.numpy(), _calibrated(z, T, harsh), rtol=0, atol=2e-6)
    assert torch.equal(got.argmax(1), z.argmax(1))
    top2 = got.topk(2, dim=1).values
    bound = top2[:, 0] / top2[:, 1]
    assert (bound >= 1.001 * (1 - 1e-5)).all() and bound[:50].max() < 1.001 * (1 + 1e-5)  # the guard binds there


def test_rule_gives_calibrated_probabilities_and_the_unsure_margin(net):
    pixels = _pixels(6, 23)
    logits = _flip_logits(net, pixels)
    with torch.no_grad():
        probs, margins = Rule(net, CONFIG)(torch.from_numpy(pixels))
        _, never = Rule(net, replace(CONFIG, unsure_threshold=None))(torch.from_numpy(pixels))
    np.testing.assert_allclose(probs.numpy(), _calibrated(logits, T, KNOTS), atol=2e-5)
    torch.testing.assert_close(margins, -torch.logsumexp(logits, 1) - THRESHOLD, rtol=0, atol=1e-4)
    assert (never == -torch.inf).all()  # no threshold: never unsure, whatever the picture


def test_folding_batch_norm_keeps_the_function_and_leaves_the_model_untouched():
    torch.manual_seed(30)
    model = _random_bn(CifarCNN(dropout=0.5), 31).train()  # in training mode, dropout on
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clf = Classifier(Weights(model, CONFIG), precision="fp32")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in clf.rule.net.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in clf.rule.net.parameters() if p.ndim == 4)
    kept = [type(m) for m in model.features if not isinstance(m, nn.BatchNorm2d)]
    assert [type(m) for m in clf.rule.net.features] == kept
    pixels = _pixels(5, 32)
    logits = _flip_logits(model, pixels)  # the eval forward: no dropout, running statistics
    answers = clf.answer(pixels)
    np.testing.assert_allclose([list(a.probabilities.values()) for a in answers], _calibrated(logits, T, KNOTS),
                               atol=2e-5)
    np.testing.assert_allclose([a.unsure_margin for a in answers], -torch.logsumexp(logits, 1) - THRESHOLD, atol=1e-4)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].is_contiguous() for k, v in before.items())
    assert all(m.training for m in model.modules()) and clf.weights.model is model


def test_unsure_means_a_margin_above_zero(net):
    pixels = _pixels(1, 34)
    answer = Classifier(Weights(net, replace(CONFIG, unsure_threshold=0.0)), precision="fp32").answer(pixels)[0]
    score = answer.unsure_margin
    below = float(np.nextafter(np.float32(score), np.float32(-np.inf)))
    at, above = (Classifier(Weights(net, replace(CONFIG, unsure_threshold=t)), precision="fp32").answer(pixels)[0]
                 for t in (score, below))
    assert (at.unsure_margin, at.unsure) == (0.0, False)
    assert above.unsure_margin > 0 and above.unsure


def test_predict_and_predict_many_give_one_answer_per_picture_in_order(bundled, photos, monkeypatch):
    clf = Classifier(bundled, precision="fp32")
    paths = [EXAMPLES / f"{c}_1.jpg" for c in ("cat", "airplane", "ship", "frog", "truck")]
    expected = [list(a.probabilities.values()) for a in clf.answer(photos)]
    assert [a.top for a in clf.answer(photos)] == ["cat", "airplane", "ship", "frog", "truck"]
    for batch_size in (2, 5):
        got = clf.predict_many(paths, batch_size=batch_size)
        np.testing.assert_allclose([list(a.probabilities.values()) for a in got], expected, atol=1e-5)
    assert len(clf.predict_many(paths)) == 5
    for picture in (paths[0], paths[0].read_bytes(), Image.open(paths[0]), io.BytesIO(paths[0].read_bytes())):
        one = clf.predict(picture)
        np.testing.assert_allclose(list(one.probabilities.values()), expected[0], atol=1e-5)
        assert np.array_equal(one.pixels, photos[0])
    sizes = []  # 256 pictures at a time through the network by default
    monkeypatch.setattr(clf, "answer", lambda pixels: sizes.append(len(pixels)) or [None] * len(pixels))
    assert len(clf.predict_many([Image.new("RGB", (32, 32))] * 257)) == 257 and sizes == [256, 1]


def test_from_pretrained_loads_a_folder_and_hands_on_revision_and_hub_options(tmp_path, monkeypatch, net):
    save(tmp_path, net, CONFIG)
    clf = Classifier.from_pretrained(tmp_path, precision="fp32")
    assert clf.classes == NAMES and clf.dtype == torch.float32
    pixels = _pixels(3, 35)
    expected = _calibrated(_flip_logits(net, pixels), T, KNOTS)
    answers = clf.answer(pixels)
    np.testing.assert_allclose([list(a.probabilities.values()) for a in answers], expected, atol=2e-5)
    for a, x, row in zip(answers, pixels, expected):  # every class by name, in order; the pixels classified
        assert list(a.probabilities) == NAMES and a.top == NAMES[row.argmax()] and a.unsure == (a.unsure_margin > 0)
        assert a.pixels.shape == (32, 32, 3) and np.array_equal(a.pixels, x)
    calls = []
    monkeypatch.setattr(clf_mod, "load", lambda *a, **kw: calls.append((a, kw)) or Weights(net, CONFIG))
    got = Classifier.from_pretrained("owner/name", "0123abc", precision="bf16", cache_dir="/c", local_files_only=True)
    assert got.dtype == torch.bfloat16
    assert calls == [(("owner/name", "0123abc"), {"cache_dir": "/c", "local_files_only": True})]


@pytest.mark.parametrize("precision, env, amx, expected", [
    ("fp32", None, True, torch.float32), ("bf16", None, False, torch.bfloat16),
    ("fp32", "bf16", True, torch.float32), ("bf16", "fp32", False, torch.bfloat16),  # a choice beats the environment
    ("auto", "bf16", False, torch.bfloat16), ("auto", "fp32", True, torch.float32),  # which beats the hardware
    ("auto", None, True, torch.bfloat16), ("auto", None, False, torch.float32),  # with neither, the hardware decides
    ("auto", "auto", True, torch.bfloat16), ("auto", "auto", False, torch.float32),
])
def test_precision_choice(monkeypatch, precision, env, amx, expected):
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: amx)
    monkeypatch.delenv("CIFAR_PRECISION", raising=False)
    if env:
        monkeypatch.setenv("CIFAR_PRECISION", env)
    assert clf_mod._pick_precision(precision) == expected


@pytest.mark.parametrize("precision, env", [("fp16", None), ("auto", "fp16"), ("FP32", "bf16")])
def test_an_unknown_precision_is_refused_naming_it(monkeypatch, precision, env):
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: False)
    monkeypatch.delenv("CIFAR_PRECISION", raising=False)
    if env:
        monkeypatch.setenv("CIFAR_PRECISION", env)
    with pytest.raises(ValueError) as err:
        Classifier(Weights(CifarCNN(), CONFIG), precision=precision)
    bad = env if precision == "auto" else precision
    assert repr(bad) in str(err.value) and "'fp32'" in str(err.value) and "'bf16'" in str(err.value)


@pytest.mark.parametrize("cpuinfo, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n", True), ("flags\t\t: fpu sse2 avx2\n", False),
    ("model name\t: says amx_bf16\nflags\t\t: fpu\n", False),  # only the flags count
    (FileNotFoundError("/proc/cpuinfo"), False),
])
def test_amx_is_read_from_the_cpu_flags(monkeypatch, cpuinfo, expected):
    def fake_open(path, *args, **kwargs):
        if isinstance(cpuinfo, OSError):
            raise cpuinfo
        return io.StringIO(cpuinfo if path == "/proc/cpuinfo" else "")

    monkeypatch.setattr(clf_mod, "open", fake_open, raising=False)
    assert clf_mod._cpu_has_amx_bf16() is expected


def test_bf16_runs_the_network_in_bf16_and_answers_close_to_fp32(monkeypatch, net):
    monkeypatch.setenv("CIFAR_PRECISION", "bf16")
    clf = Classifier(Weights(net, CONFIG), precision="auto")  # the environment's choice
    assert clf.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in clf.rule.net.parameters())
    pixels = _pixels(5, 36)
    got = np.array([list(a.probabilities.values()) for a in clf.answer(pixels)])
    np.testing.assert_allclose(got, _calibrated(_flip_logits(net, pixels), T, KNOTS), atol=0.02)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    logits = tta_logits(clf.rule.net, torch.from_numpy(pixels), MEAN, STD, torch.bfloat16)
    expected = _flip_logits(net, pixels)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=0.05 * float(expected.abs().max()))


def _reference_cam(model: CifarCNN, pixels: np.ndarray, k: int, mean, std) -> tuple[torch.Tensor, np.ndarray]:
    """Grad-CAM with hooks on an eval copy: the 6x6 map before the ReLU, and the 32x32 heatmap."""
    model, seen = copy.deepcopy(model).eval(), {}

    def keep(_module, _inputs, out):
        seen["act"] = out
        out.register_hook(lambda grad: seen.update(grad=grad))

    hook = model.features[model.CAM_LAYER].register_forward_hook(keep)
    model(_normalise(pixels[None], mean, std))[0, k].backward()
    hook.remove()
    raw = (seen["grad"].mean(dim=(2, 3), keepdim=True) * seen["act"].detach()).sum(dim=1, keepdim=True)
    heat = F.interpolate(raw.clamp_min(0), size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    return raw[0, 0], (heat / heat.max() if heat.max() > 0 else heat).numpy()


def test_grad_cam_is_plain_grad_cam_of_the_class_asked_for(bundled, photos):
    model = bundled.model  # with a normalisation of its own: a dropped mean or std would show
    for pixels in photos[:2]:
        logits = _eval(model, _normalise(pixels[None], MEAN, STD))[0]
        maps = {}
        for k in (int(logits.argmax()), int(logits.argsort()[-2])):
            raw, expected = _reference_cam(model, pixels, k, MEAN, STD)
            assert raw.min() < 0 < raw.max()  # parts against the class: the ReLU matters
            maps[k] = grad_cam(model, pixels, k, MEAN, STD)
            assert maps[k].dtype == np.float32 and maps[k].shape == (32, 32)
            assert np.abs(maps[k] - expected).max() < 1e-4 and maps[k].max() == pytest.approx(1) and maps[k].min() >= 0
        first, second = maps.values()
        assert np.abs(first - second).max() > 0.1  # another class's map is another map


def test_heatmap_explains_the_answers_top_class(bundled, photos):
    clf = Classifier(Weights(bundled.model, CONFIG), precision="fp32")
    answer = clf.answer(photos[2:3])[0]
    _, expected = _reference_cam(bundled.model, photos[2], NAMES.index(answer.top), MEAN, STD)
    assert np.abs(clf.heatmap(answer) - expected).max() < 1e-4


def test_grad_cam_is_zeros_when_nothing_favours_the_class(bundled, photos):
    # Positive weights after the CAM layer and a negative row for class k: the gradient of logit k is <= 0
    # at every (non-negative) activation, so no part of the picture favours k.
    model, k, config = copy.deepcopy(bundled.model), 4, bundled.config
    with torch.no_grad():
        for layer in (model.features[-2], model.classifier[1]):
            layer.weight.abs_()
            layer.bias.abs_()
        model.classifier[-1].weight[k].copy_(-model.classifier[-1].weight[k].abs())
    raw, _ = _reference_cam(model, photos[0], k, config.mean, config.std)
    assert raw.max() <= 0 and raw.min() < 0
    got = grad_cam(model, photos[0], k, config.mean, config.std)
    assert got.dtype == np.float32 and got.shape == (32, 32) and not got.any()


def test_grad_cam_leaves_no_gradients_and_no_hooks(bundled, photos):
    model, config = bundled.model, bundled.config
    first = grad_cam(model, photos[3], 6, config.mean, config.std)
    assert all(p.grad is None for p in model.parameters())  # the app's threads share the model
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():  # the caller's mode does not matter
        assert np.abs(grad_cam(model, photos[3], 6, config.mean, config.std) - first).max() < 1e-4


def _grey(path: Path) -> Path:
    Image.new("RGB", (64, 48), (128, 128, 128)).save(path)
    return path


def test_cli_prints_the_top_classes_and_says_unsure_for_a_picture_of_nothing(tmp_path, capsys):
    grey, cat = _grey(tmp_path / "grey.png"), EXAMPLES / "cat_1.jpg"
    clf = Classifier.from_pretrained()  # what the command line loads
    nothing, photo = clf.predict(grey), clf.predict(cat)
    assert nothing.unsure and not photo.unsure and photo.top == "cat"
    assert cli([str(grey), str(cat), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, path, answer in zip(lines, (grey, cat), (nothing, photo)):
        best = sorted(answer.probabilities.items(), key=lambda kv: -kv[1])[:2]
        shown = ", ".join(f"{name} {p:.1%}" for name, p in best)
        assert line.startswith(f"{path}: ") and line.endswith(shown)
        assert ("unsure" in line) is answer.unsure
    assert len(lines) == 2
    cli([str(cat)])
    assert capsys.readouterr().out.count("%") == 3  # three classes by default
    cli([str(cat), "--top", "0"])
    assert capsys.readouterr().out.count("%") == 1  # at least one


def test_cli_reports_bad_pictures_and_bad_weights(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.jpg").write_text("not a picture")
    assert cli([str(tmp_path / "notes.jpg"), str(EXAMPLES / "cat_1.jpg")]) == 1
    out, err = capsys.readouterr()
    assert "cat_1.jpg: cat" in out and "notes.jpg: error:" in err and "notes.jpg" not in out
    assert cli([str(EXAMPLES / "cat_1.jpg"), "--model", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "config.json" in err
    asked = []
    monkeypatch.setattr(Classifier, "from_pretrained", lambda *a: asked.append(a) or clf_mod.load(str(tmp_path)))
    assert cli(["x.jpg", "--model", "owner/name", "--revision", "0abc"]) == 2 and asked == [("owner/name", "0abc")]
