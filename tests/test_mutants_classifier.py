"""Behaviour of cifar_model.classifier (tta_logits, the BatchNorm folding, the precision choice,
Classifier) and cifar_model.explain (grad_cam) that mutation testing (python -m benchmarks.mutation
--module classifier, with tests/test_model.py) needs checked: every expectation here is computed in
the test itself (a plain eval forward, a Grad-CAM written out with autograd, to_probabilities), not
copied from the code under test. CPU only, float32 wherever numbers are compared."""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_model import CLASSES, Classifier, CifarCNN, grad_cam
from cifar_model import classifier as clf_mod
from cifar_model import preprocess, weights
from cifar_model.calibration import to_probabilities
from cifar_model.weights import WeightsInfo
from test_model import randomize_batch_norm

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(60)]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Normalisation and calibration no default matches, so a dropped argument falling back to a default shows.
MEAN, STD = [0.45, 0.5, 0.4], [0.25, 0.22, 0.28]
TEMPERATURE = 1.7
KNOTS = [[0.2, 0.3], [0.5, 0.4], [0.9, 0.7]]
THRESHOLD = 5.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W, written out here (not preprocess.normalize)."""
    x = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _random_pixels(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=_gen(seed))


def _eval_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A plain eval-mode forward of a copy (the model given is left as it is)."""
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """A small network that is not symmetric under any flip, with BatchNorm and dropout (which make
    train mode differ from eval mode). Fast, so tta_logits can be checked on it to 1e-5."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(4 * 32 * 32, 5))
    randomize_batch_norm(net, 1)
    return net.eval()


@pytest.fixture(scope="module")
def trained(classifier) -> CifarCNN:
    """The bundled network (trained BatchNorm statistics, logits of real scale) with its normalisation,
    class names and calibration replaced by values no default matches. Tests copy it before changing it."""
    model = copy.deepcopy(classifier.model).eval()
    model.mean, model.std = list(MEAN), list(STD)
    model.classes = [f"label {c}" for c in reversed(CLASSES)]
    model.temperature, model.top_label_map, model.unfamiliar_below = TEMPERATURE, KNOTS, THRESHOLD
    return model


@pytest.fixture(scope="module")
def pictures() -> np.ndarray:
    """Five example photos of five different classes, as the network sees them (5 x 32 x 32 x 3 uint8)."""
    paths = [EXAMPLES / f"{name}_1.jpg" for name in ("cat", "airplane", "ship", "frog", "truck")]
    return np.stack([preprocess.to_uint8(p) for p in paths])


# --- tta_logits ---------------------------------------------------------------------------------------


def test_tta_logits_without_tta_is_the_eval_forward_of_the_normalised_pictures(tiny):
    pixels = _random_pixels(5, 10)
    got = clf_mod.tta_logits(tiny, pixels, MEAN, STD, tta=False)
    expected = _eval_forward(tiny, _normalise(pixels, MEAN, STD))
    assert got.dtype == torch.float32 and got.shape == (5, 5) and not got.requires_grad
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tta_logits_by_default_averages_each_picture_with_its_left_right_mirror(tiny):
    pixels = _random_pixels(5, 11)
    x = _normalise(pixels, MEAN, STD)
    plain = _eval_forward(tiny, x)
    mirrored = _eval_forward(tiny, x.flip(3))  # NCHW: axis 3 is the width (left <-> right)
    expected = (plain + mirrored) / 2
    got = clf_mod.tta_logits(tiny, pixels, MEAN, STD)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the test can tell the mirror from the plain picture, an upside-down or a colour-swapped one
    for other in (plain, (plain + _eval_forward(tiny, x.flip(2))) / 2, (plain + _eval_forward(tiny, x.flip(1))) / 2):
        assert (got - other).abs().max() > 1e-2


@pytest.mark.parametrize("tta", [True, False])
def test_tta_logits_in_batches_gives_what_one_batch_gives(tiny, tta):
    seen: list[tuple[int, bool]] = []

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(tiny)

        def forward(self, x):
            seen.append((len(x), x.is_contiguous(memory_format=torch.channels_last)))
            return self.inner(x)

    net = Recording().eval()
    pixels = _random_pixels(7, 12)
    whole = clf_mod.tta_logits(net, pixels, MEAN, STD, tta=tta)
    assert [n for n, _ in seen] == [14 if tta else 7]  # the default batch holds seven pictures
    seen.clear()
    got = clf_mod.tta_logits(net, pixels, MEAN, STD, tta=tta, batch_size=3)
    per_picture = 2 if tta else 1  # with tta each batch goes through with its mirror images
    assert [n for n, _ in seen] == [3 * per_picture, 3 * per_picture, 1 * per_picture]
    assert all(channels_last for _, channels_last in seen)  # the layout the folded network is in
    assert got.shape == (7, 5)
    torch.testing.assert_close(got, whole, rtol=1e-6, atol=1e-6)
    # pictures stored channels-first (an N x 3 x 32 x 32 tensor viewed as N x 32 x 32 x 3) reach the
    # network channels-last too
    seen.clear()
    stored = pixels.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    torch.testing.assert_close(clf_mod.tta_logits(net, stored, MEAN, STD, tta=tta), whole, rtol=1e-6, atol=1e-6)
    assert seen and all(channels_last for _, channels_last in seen)


@pytest.mark.parametrize("training", [True, False])
def test_tta_logits_uses_eval_mode_and_restores_the_training_flag(tiny, training):
    net = copy.deepcopy(tiny).train(training)
    pixels = _random_pixels(4, 13)
    x = _normalise(pixels, MEAN, STD)
    expected = (_eval_forward(tiny, x) + _eval_forward(tiny, x.flip(3))) / 2
    got = clf_mod.tta_logits(net, pixels, MEAN, STD)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # no dropout, no batch statistics
    assert net.training is training
    assert all(m.training is training for m in net.modules())


@pytest.mark.parametrize("tta", [True, False])
def test_tta_logits_of_a_bf16_network_are_float32(tiny, tta):
    net = copy.deepcopy(tiny).to(torch.bfloat16)
    pixels = _random_pixels(4, 14)
    x = _normalise(pixels, MEAN, STD)
    expected = _eval_forward(tiny, x)
    if tta:
        expected = (expected + _eval_forward(tiny, x.flip(3))) / 2
    got = clf_mod.tta_logits(net, pixels, MEAN, STD, tta=tta, dtype=torch.bfloat16)
    assert got.dtype == torch.float32 and got.shape == (4, 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05 * float(expected.abs().max()))


# --- _fused_for_inference -------------------------------------------------------------------------------


@pytest.fixture()
def random_model() -> CifarCNN:
    """A random CifarCNN with non-trivial BatchNorm statistics and parameters, in train mode."""
    torch.manual_seed(20)
    model = CifarCNN(mean=MEAN, std=STD)
    randomize_batch_norm(model, 21)
    return model.train()


def test_folding_keeps_the_function_of_the_eval_model(random_model, trained):
    x = _normalise(_random_pixels(4, 22), MEAN, STD)
    for model in (random_model, trained):
        expected = _eval_forward(model, x)
        with torch.no_grad():
            got = clf_mod._fused_for_inference(model)(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_folding_removes_every_batch_norm_and_keeps_the_other_layers_in_order(random_model):
    fused = clf_mod._fused_for_inference(random_model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    kept = [type(m) for m in random_model.features if not isinstance(m, nn.BatchNorm2d)]
    assert [type(m) for m in fused.features] == kept
    assert [type(m) for m in fused.classifier] == [type(m) for m in random_model.classifier]


def test_folding_leaves_the_model_it_was_given_untouched(random_model):
    before = {k: v.clone() for k, v in random_model.state_dict().items()}
    types = [type(m) for m in random_model.modules()]
    fused = clf_mod._fused_for_inference(random_model)
    assert fused is not random_model
    assert [type(m) for m in random_model.modules()] == types  # its BatchNorms are still there
    after = random_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert all(after[k].is_contiguous() for k in after)  # not turned channels-last either
    assert all(m.training for m in random_model.modules())  # still in train mode, every layer


def test_the_folded_copy_is_in_eval_mode_and_channels_last(random_model):
    fused = clf_mod._fused_for_inference(random_model)
    # the layers that act differently in training (dropout; the BatchNorms are folded away) are in eval
    # mode. (The new features Sequential itself carries training=True: a flag nothing reads.)
    assert fused.training is False
    assert [m.training for m in fused.modules() if isinstance(m, (nn.Dropout, nn.BatchNorm2d))] == [False]
    four_d = [p for p in fused.parameters() if p.ndim == 4]
    assert len(four_d) == 6 and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)


# --- _pick_precision --------------------------------------------------------------------------------


@pytest.mark.parametrize("precision, env, amx, expected", [
    ("fp32", None, True, torch.float32),
    ("bf16", None, False, torch.bfloat16),
    ("fp32", "bf16", True, torch.float32),  # an explicit choice beats the environment...
    ("bf16", "fp32", False, torch.bfloat16),
    ("auto", "bf16", False, torch.bfloat16),  # ...which beats the hardware
    ("auto", "fp32", True, torch.float32),
    ("auto", None, True, torch.bfloat16),  # and with neither, the hardware decides
    ("auto", None, False, torch.float32),
    ("auto", "auto", True, torch.bfloat16),
    ("auto", "auto", False, torch.float32),
])
def test_pick_precision(monkeypatch, precision, env, amx, expected):
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: amx)
    if env is None:
        monkeypatch.delenv("CIFAR_PRECISION", raising=False)
    else:
        monkeypatch.setenv("CIFAR_PRECISION", env)
    assert clf_mod._pick_precision(precision) == expected


@pytest.mark.parametrize("precision, env", [("fp16", None), ("auto", "fp16"), ("FP32", "bf16")])
def test_an_unknown_precision_is_refused_naming_it(monkeypatch, precision, env):
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: False)
    if env is None:
        monkeypatch.delenv("CIFAR_PRECISION", raising=False)
    else:
        monkeypatch.setenv("CIFAR_PRECISION", env)
    bad = env if precision == "auto" else precision
    message = f"precision must be 'auto', 'fp32' or 'bf16', not {bad!r}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        clf_mod._pick_precision(precision)


# --- Classifier -------------------------------------------------------------------------------------


def test_classifier_logits_are_the_mirror_averaged_eval_logits_with_the_models_normalisation(trained, pictures):
    model = copy.deepcopy(trained).train()
    clf = Classifier(model, precision="fp32")
    assert clf.model is model and not model.training
    assert clf.classes == model.classes and clf.classes is not model.classes
    assert (clf.mean, clf.std, clf.image_size) == (MEAN, STD, 32)
    pixels = torch.from_numpy(pictures)
    x = _normalise(pixels, MEAN, STD)
    expected = (_eval_forward(trained, x) + _eval_forward(trained, x.flip(3))) / 2
    got = clf.logits(pixels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - _eval_forward(trained, x)).abs().max() > 0.05  # the mirror counts


def test_classifier_without_tta_gives_the_plain_eval_logits(trained, pictures):
    clf = Classifier(copy.deepcopy(trained), tta=False, precision="fp32")
    assert clf.tta is False
    pixels = torch.from_numpy(pictures)
    expected = _eval_forward(trained, _normalise(pixels, MEAN, STD))
    torch.testing.assert_close(clf.logits(pixels), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("amx", [True, False])
def test_classifier_precision_comes_from_the_environment_and_the_hardware(monkeypatch, trained, amx):
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: amx)
    monkeypatch.delenv("CIFAR_PRECISION", raising=False)
    clf = Classifier(copy.deepcopy(trained))  # precision "auto"
    expected = torch.bfloat16 if amx else torch.float32
    assert clf.dtype == expected
    assert clf.backend.split(", ")[0] == ("bf16" if amx else "fp32")
    monkeypatch.setenv("CIFAR_PRECISION", "fp32" if amx else "bf16")
    assert Classifier(copy.deepcopy(trained)).dtype == (torch.float32 if amx else torch.bfloat16)


def test_a_bf16_classifier_runs_in_bf16_and_answers_in_float32(trained, pictures):
    clf = Classifier(copy.deepcopy(trained), precision="bf16")
    assert clf.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in clf._net.parameters())
    assert clf.backend.startswith("bf16,") and "BatchNorm folded" in clf.backend
    pixels = torch.from_numpy(pictures)
    x = _normalise(pixels, MEAN, STD)
    expected = (_eval_forward(trained, x) + _eval_forward(trained, x.flip(3))) / 2
    got = clf.logits(pixels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0.05 * float(expected.abs().max()))
    probs = clf.probabilities(pixels)
    assert probs.dtype == torch.float32 and torch.allclose(probs.sum(1), torch.ones(5))

    fp32 = Classifier(copy.deepcopy(trained), precision="fp32")
    assert fp32.backend.startswith("fp32,") and all(p.dtype == torch.float32 for p in fp32._net.parameters())


def test_calibrate_uses_the_models_temperature_and_top_label_map(trained):
    clf = Classifier(copy.deepcopy(trained), precision="fp32")
    z = torch.randn(6, 10, generator=_gen(30)) * 3
    expected = to_probabilities(z, TEMPERATURE, top_label_map=KNOTS)
    torch.testing.assert_close(clf.calibrate(z), expected, rtol=0, atol=1e-7)
    # both parts of the calibration change the answer here
    for without in (to_probabilities(z), to_probabilities(z, TEMPERATURE), to_probabilities(z, top_label_map=KNOTS)):
        assert (expected - without).abs().max() > 1e-3


def test_probabilities_are_the_calibrated_logits(trained, pictures):
    clf = Classifier(copy.deepcopy(trained), precision="fp32")
    pixels = torch.from_numpy(pictures)
    expected = to_probabilities(clf.logits(pixels), TEMPERATURE, top_label_map=KNOTS)
    torch.testing.assert_close(clf.probabilities(pixels), expected, rtol=0, atol=1e-7)


def test_unfamiliar_is_the_energy_rule_at_the_models_threshold(trained):
    clf = Classifier(copy.deepcopy(trained), precision="fp32")
    # 40 rows whose energy score (logsumexp) runs from THRESHOLD - 1 to THRESHOLD + 1 in steps of 0.05
    # (none on it): a threshold moved by more than that, or taken from elsewhere, flags other rows
    offsets = torch.cat([torch.linspace(-1, -0.05, 20), torch.linspace(0.05, 1, 20)])
    z = torch.randn(40, 10, generator=_gen(31)) * 2
    z += (THRESHOLD + offsets - torch.logsumexp(z, dim=1)).unsqueeze(1)
    expected = torch.logsumexp(z, dim=1) < THRESHOLD
    assert expected.sum() == 20 and expected[:20].all()
    got = clf.unfamiliar(z)
    assert got.dtype == torch.bool and got.shape == (40,)
    assert torch.equal(got, expected)
    one = clf.unfamiliar(z[:1])
    assert one.shape == (1,) and bool(one[0]) == bool(expected[0])


def test_without_a_threshold_nothing_is_unfamiliar(trained):
    model = copy.deepcopy(trained)
    model.unfamiliar_below = None
    clf = Classifier(model, precision="fp32")
    got = clf.unfamiliar(torch.full((7, 10), -50.0))  # would be far below any threshold
    assert got.dtype == torch.bool and got.shape == (7,) and not got.any()


def test_an_in_memory_model_says_so_and_a_given_info_is_kept(trained):
    clf = Classifier(copy.deepcopy(trained), precision="fp32")
    assert isinstance(clf.info, WeightsInfo)
    assert (clf.info.source, clf.info.label, clf.info.folder) == ("in-memory", "in-memory", Path("."))
    assert clf.info.revision is None and clf.info.metrics is None
    info = WeightsInfo("owner/name", Path("/nowhere"), revision="0123456789")
    assert Classifier(copy.deepcopy(trained), info, precision="fp32").info is info


def test_from_pretrained_hands_source_revision_and_hub_options_to_loading(monkeypatch, trained):
    calls: list[dict] = []
    info = WeightsInfo("owner/name", Path("/nowhere"), revision="0123456789")
    model = copy.deepcopy(trained)

    def fake_load(*args, **kwargs):
        calls.append(inspect.signature(weights.load).bind(*args, **kwargs).arguments)
        return model, info

    monkeypatch.setattr(clf_mod, "load", fake_load)
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: False)
    monkeypatch.setenv("CIFAR_PRECISION", "fp32")
    clf = Classifier.from_pretrained("owner/name", "0123456789", precision="bf16", cache_dir="/c",
                                     local_files_only=True)
    assert calls == [dict(source="owner/name", revision="0123456789",
                          hub_kwargs=dict(cache_dir="/c", local_files_only=True))]
    assert clf.model is model and clf.info is info and clf.dtype == torch.bfloat16
    # no precision given: "auto" (here the environment's)
    assert Classifier.from_pretrained("owner/name").dtype == torch.float32
    monkeypatch.delenv("CIFAR_PRECISION")
    monkeypatch.setattr(clf_mod, "_cpu_has_amx_bf16", lambda: True)
    assert Classifier.from_pretrained("owner/name").dtype == torch.bfloat16


def test_to_uint8_is_the_shared_preprocessing(classifier):
    path = EXAMPLES / "dog_1.jpg"
    got = classifier.to_uint8(path)
    assert got.dtype == np.uint8 and got.shape == (32, 32, 3)
    np.testing.assert_array_equal(got, preprocess.to_uint8(path))


def test_predict_pixels_maps_each_class_name_in_order_to_its_probability(trained, pictures):
    clf = Classifier(copy.deepcopy(trained), precision="fp32")
    got = clf.predict_pixels(pictures)
    expected = clf.probabilities(torch.from_numpy(pictures))
    assert len(got) == 5 and all(list(row) == trained.classes for row in got)
    np.testing.assert_allclose([list(row.values()) for row in got], expected.numpy(), rtol=0, atol=1e-7)


def test_predict_wraps_a_single_picture(classifier, pictures):
    path = EXAMPLES / "cat_1.jpg"
    got = classifier.predict(path)
    assert isinstance(got, list) and len(got) == 1
    expected = classifier.predict_pixels(pictures[:1])[0]
    assert list(got[0]) == list(expected)
    np.testing.assert_allclose(list(got[0].values()), list(expected.values()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("container", [list, tuple])
def test_predict_in_batches_gives_one_answer_per_picture_in_order(classifier, pictures, container):
    paths = container(EXAMPLES / f"{name}_1.jpg" for name in ("cat", "airplane", "ship", "frog", "truck"))
    expected = classifier.predict_pixels(pictures)
    for batch_size in (2, 5):
        got = classifier.predict(paths, batch_size=batch_size)
        assert len(got) == 5 and all(list(row) == classifier.classes for row in got)
        np.testing.assert_allclose([list(r.values()) for r in got], [list(r.values()) for r in expected],
                                   rtol=0, atol=1e-5)
    # the five pictures get five different answers, so a picture answered twice or skipped would show
    assert len({max(row, key=row.get) for row in expected}) == 5


# --- grad_cam -----------------------------------------------------------------------------------------


def _reference_cam(model: CifarCNN, pixels: np.ndarray, class_index: int) -> tuple[torch.Tensor, np.ndarray]:
    """Grad-CAM written out: the activation at features[CAM_LAYER] of an eval copy, the gradient of the
    class logit there by autograd, channel weights = its spatial mean. Returns the 6x6 map before the
    ReLU and the 32x32 heatmap (ReLU, bilinear upsampling, scaled to max 1)."""
    model = copy.deepcopy(model).eval()
    x = _normalise(torch.from_numpy(np.ascontiguousarray(pixels))[None], model.mean, model.std)
    cut = model.CAM_LAYER + 1
    with torch.enable_grad():
        act = model.features[:cut](x)
        logit = model.classifier(model.features[cut:](act))[0, class_index]
        (grad,) = torch.autograd.grad(logit, act)
    raw = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True).detach()
    heat = F.interpolate(raw.clamp_min(0), size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    top = float(heat.max())
    return raw[0, 0], (heat / top if top > 0 else heat).numpy()


def _eval_logits(model: CifarCNN, pixels: np.ndarray) -> torch.Tensor:
    return _eval_forward(model, _normalise(torch.from_numpy(pixels)[None], model.mean, model.std))[0]


@pytest.fixture(scope="module")
def cam_model(trained) -> CifarCNN:
    return copy.deepcopy(trained)


def test_grad_cam_is_plain_grad_cam_of_the_class_asked_for(cam_model, pictures):
    pixels = pictures[0]
    logits = _eval_logits(cam_model, pixels)
    for k in (int(logits.argmax()), int(logits.argmin())):
        raw, expected = _reference_cam(cam_model, pixels, k)
        # the map has parts against the class (so the ReLU matters) and its largest value is below 1
        # (so the scaling to 1 matters)
        assert raw.min() < 0 < raw.max() < 1
        got = grad_cam(cam_model, pixels, class_index=k)
        assert got.dtype == np.float32 and got.shape == (32, 32)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        assert got.max() == 1.0 and got.min() >= 0.0


def test_grad_cam_without_a_class_explains_the_top_class(cam_model, pictures):
    for pixels in pictures[:3]:
        logits = _eval_logits(cam_model, pixels)
        top, other = int(logits.argmax()), int(logits.argsort()[-2])
        got = grad_cam(cam_model, pixels)
        np.testing.assert_allclose(got, _reference_cam(cam_model, pixels, top)[1], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got, grad_cam(cam_model, pixels, class_index=top))
        assert np.abs(got - grad_cam(cam_model, pixels, class_index=other)).max() > 0.1


def test_grad_cam_is_all_zeros_when_nothing_in_the_picture_favours_the_class(trained, pictures):
    # Positive weights after the CAM layer and a negative row for class k in the last layer: the
    # gradient of logit k is <= 0 at every activation (>= 0 after a ReLU), so no part favours k.
    model, k = copy.deepcopy(trained), 4
    with torch.no_grad():
        for layer in (model.features[-2], model.classifier[1]):
            layer.weight.abs_()
            layer.bias.abs_()
        model.classifier[-1].weight[k].copy_(-model.classifier[-1].weight[k].abs())
    raw, expected = _reference_cam(model, pictures[0], k)
    assert raw.max() <= 0 and raw.min() < 0 and not expected.any()
    got = grad_cam(model, pictures[0], class_index=k)
    assert got.dtype == np.float32 and got.shape == (32, 32)
    np.testing.assert_array_equal(got, np.zeros((32, 32), np.float32))


def test_grad_cam_uses_eval_mode_and_leaves_no_hook(trained, pictures):
    model = copy.deepcopy(trained).train()
    pixels = pictures[1]
    got = grad_cam(model, pixels)
    top = int(_eval_logits(trained, pixels).argmax())
    np.testing.assert_allclose(got, _reference_cam(trained, pixels, top)[1], rtol=0, atol=1e-5)
    assert not any(m.training for m in model.modules())
    layer = model.features[model.CAM_LAYER]
    assert not layer._forward_hooks and not any(m._forward_hooks for m in model.modules())
    with pytest.raises(IndexError):
        grad_cam(model, pixels, class_index=len(model.classes))  # no such class: still no hook left
    assert not any(m._forward_hooks for m in model.modules())


def test_grad_cam_is_repeatable_and_leaves_no_gradients(cam_model, pictures):
    pixels = pictures[2]
    cam_model.zero_grad(set_to_none=True)
    first = grad_cam(cam_model, pixels)
    second = grad_cam(cam_model, pixels)
    np.testing.assert_array_equal(first, second)
    # the model is shared by the app's requests: its parameters' gradients are neither kept nor touched
    assert all(p.grad is None for p in cam_model.parameters())
    # under no_grad, and on a mirrored (negatively strided) view of the picture, it works all the same
    with torch.no_grad():
        np.testing.assert_array_equal(grad_cam(cam_model, pixels), first)
    mirror = pixels[:, ::-1]
    k = int(_eval_logits(cam_model, np.ascontiguousarray(mirror)).argmax())
    np.testing.assert_allclose(grad_cam(cam_model, mirror), _reference_cam(cam_model, mirror, k)[1],
                               rtol=0, atol=1e-5)
