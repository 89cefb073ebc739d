"""Calibration: logits into honest probabilities, how honest they are, and the "unsure" rule.

    probs = to_probabilities(logits, temperature=T, top_label_map=knots)   # the one place
    T = fit_temperature(val_logits, val_labels)                           # on validation data only
    knots = fit_top_label_map(val_logits, val_labels, T)
    expected_calibration_error(probs, labels)                             # 15 equal-width bins

The shipped network was trained with label smoothing, which makes it under-confident (mean top
probability ~76% at ~91% accuracy) and squashes its most confident answers together. Dividing the
logits by one temperature fitted on validation pictures (NLL) removes most of the gap but leaves the
middle confidences (0.6-0.93) about 10 points too high, because the smoothed network's top
probabilities saturate near 0.98 whatever the picture. A monotone map of the temperature-scaled top
probability, also fitted on validation pictures, removes the rest; the other classes keep their
ratios and the answer (argmax) never changes. Measured in benchmarks/calibration.py.

One rule flags pictures the model should not be trusted on: :func:`is_unfamiliar`, the raw logits'
energy score below a threshold fitted on validation pictures (:func:`fit_unfamiliar_threshold`). Of the
scores compared in benchmarks/calibration.py (calibrated top probability, max logit, energy, margin,
entropy) it flags the most pictures of none of the ten classes at the same rate on CIFAR-10 pictures.

Everything here accepts torch tensors (or numpy arrays) and returns python floats or float32 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

TensorLike = torch.Tensor | np.ndarray | Sequence
Knots = Sequence[Sequence[float]]

# The unsure rule fires on this share of the validation pictures (its threshold is fitted there): at
# 10% the CIFAR-10 test pictures it leaves are 95.5% right, those it flags 56% (benchmarks/calibration.py).
UNFAMILIAR_RATE = 0.10
# fit_top_label_map's default number of logistic steps: of 4, 6, 8, 12 and 16, the one with the
# lowest 5-fold cross-validated ECE on the shipped weights' validation hold-out.
MAP_STEPS = 16

_T_MIN, _T_MAX = 0.01, 100.0  # fit_temperature's search range
_EPS = 1e-12  # NLL clamps probabilities at this (a probability of exactly 0 would be infinite loss)


def _float64(x: TensorLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()


def _labels(y: TensorLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu().long()


def _check_pair(probs: torch.Tensor, labels: torch.Tensor) -> None:
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise ValueError(f"expected N x C probabilities and N labels, got {tuple(probs.shape)} and "
                         f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("no pictures")


# --- logits -> probabilities --------------------------------------------------------------------


def to_probabilities(logits: TensorLike, temperature: float = 1.0, *, top_label_map: Knots | None = None
                     ) -> torch.Tensor:
    """The one place where logits become probabilities: ``softmax(logits / temperature)`` in float32.

    Args:
        logits: ``N x C`` (or ``C``) uncalibrated logits, e.g. :meth:`Classifier.logits`.
        temperature: > 0; 1.0 is the plain softmax. Use :func:`fit_temperature` on validation data.
        top_label_map: optional knots ``[[x, y], ...]`` from :func:`fit_top_label_map`: the top
            class's temperature-scaled probability ``x`` becomes ``y`` (piecewise linear in log-odds
            between knots, flat beyond the ends); the other classes are rescaled in proportion so the
            row still sums to 1, and never above the top class, so the argmax is unchanged. ``None``
            (the default) leaves the softmax as it is.

    Returns:
        float32 probabilities of the same shape, rows summing to 1.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, not {temperature!r}")
    z = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    probs = torch.softmax(z.detach().float() / float(temperature), dim=-1)
    if top_label_map is None:
        return probs
    flat = probs.reshape(-1, probs.shape[-1])
    return _remap_top(flat, _knots(top_label_map)).reshape(probs.shape)


def check_knots(top_label_map: Knots) -> None:
    """Raise ``ValueError`` (or ``TypeError``) unless ``top_label_map`` is a usable map: at least two
    ``[x, y]`` pairs of finite numbers strictly between 0 and 1, x increasing, y not decreasing."""
    _knots(top_label_map)


def _knots(top_label_map: Knots) -> tuple[torch.Tensor, torch.Tensor]:
    if any(isinstance(v, (bool, str, bytes)) for pair in top_label_map for v in pair):
        raise TypeError("top_label_map: every x and y must be a number")
    k = torch.as_tensor(np.asarray(top_label_map, dtype=np.float64))
    if k.ndim != 2 or k.shape[1] != 2 or len(k) < 2:
        raise ValueError("top_label_map must be at least two [x, y] pairs")
    x, y = k[:, 0], k[:, 1]
    if not (torch.all((x > 0) & (x < 1)) and torch.all((y > 0) & (y < 1))):  # NaN fails here too
        raise ValueError("top_label_map: every x and y must be strictly between 0 and 1")
    if not (torch.all(x[1:] > x[:-1]) and torch.all(y[1:] >= y[:-1])):
        raise ValueError("top_label_map: x must increase and y must not decrease")
    return torch.logit(x), torch.logit(y)


def _interp(v: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation through (xs, ys), flat beyond the ends."""
    v = v.clamp(xs[0], xs[-1])
    i = torch.searchsorted(xs, v).clamp(1, len(xs) - 1)
    t = (v - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + t * (ys[i] - ys[i - 1])


def _remap_top(probs: torch.Tensor, knots: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    p = probs.double()
    knots = (knots[0].to(p.device), knots[1].to(p.device))
    top, arg = p.max(dim=1)
    rows = torch.arange(len(p), device=p.device)
    others = p.clone()
    others[rows, arg] = 0.0
    rest = others.sum(dim=1)  # not 1 - top: that cancels to 0 in float32 for very sure rows
    second = others.max(dim=1).values
    new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 - 1e-12)), *knots))
    # Keep the argmax: the rescaled runner-up second * (1 - new) / rest must stay below new (by a
    # relative 1e-3, so that no tie can hand the answer to another class).
    lead = second * (1 + 1e-3)
    floor = torch.where(rest > 0, lead / (rest + lead).clamp_min(1e-300), torch.zeros_like(rest))
    new_top = torch.maximum(new_top, floor)
    scale = torch.where(rest > 0, (1 - new_top) / rest.clamp_min(1e-300), torch.zeros_like(rest))
    out = others * scale.unsqueeze(1)
    spread = torch.where(rest > 0, torch.zeros_like(rest), (1 - new_top) / max(p.shape[1] - 1, 1))
    out = out + spread.unsqueeze(1)  # rows whose other classes underflowed to exactly 0
    out[rows, arg] = new_top
    return out.float()


# --- fitting (validation data only) -------------------------------------------------------------


def fit_temperature(logits: TensorLike, labels: TensorLike) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` on these (validation) pictures.

    The NLL is convex in 1/T, so its derivative in 1/T is increasing: a bisection on log(1/T) over
    T in [0.01, 100] finds the minimum without a learning rate or a starting point (deterministic;
    computed in float64). Returns a bound when the minimum lies beyond it.
    """
    z = _float64(logits)
    y = _labels(labels)
    _check_pair(z, y)
    target = z[torch.arange(len(y)), y]

    def slope(log_beta: float) -> float:  # d NLL / d beta at beta = exp(log_beta)
        p = torch.softmax(z * math.exp(log_beta), dim=1)
        return float(((p * z).sum(dim=1) - target).mean())

    lo, hi = math.log(1 / _T_MAX), math.log(1 / _T_MIN)
    if slope(lo) >= 0:
        return _T_MAX
    if slope(hi) <= 0:
        return _T_MIN
    for _ in range(50):  # the bracket is 9.2 wide in log(1/T): 2^-50 of it is below float64's step
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return float(1 / math.exp((lo + hi) / 2))


def fit_top_label_map(logits: TensorLike, labels: TensorLike, temperature: float, *, steps: int = MAP_STEPS,
                      points: int = 48) -> list[list[float]] | None:
    """Knots for ``to_probabilities(..., top_label_map=...)``: a smooth increasing map from the
    temperature-scaled top probability to the chance that the top class is right.

    Fitted on these (validation) pictures by maximum likelihood of "the top class is right": in
    log-odds, a linear term plus ``steps`` logistic steps evenly spread between the 2nd and 98th
    percentiles of the data, all with positive weights (so the map increases), by L-BFGS from a fixed
    start in float64 (deterministic). Below the lowest 1% of the data, where a fit would only
    extrapolate, the map runs straight (in log-odds) down to chance level: a top probability of 1/C
    (C classes, logits that can't tell the classes apart) stays 1/C. Returned sampled at ``points``
    knots evenly spaced in log-odds from x = 1/C to 0.9999; ``None`` (no map: the temperature alone)
    when the fit has no maximum, as when every picture in a range of confidence is right.
    """
    z = _float64(logits)
    y = _labels(labels)
    _check_pair(z, y)
    p = torch.softmax(z / temperature, dim=1)
    top, arg = p.max(dim=1)
    right = (arg == y).double()
    s = torch.logit(top.clamp(1e-9, 1 - 1e-9))
    lo, hi = float(s.quantile(0.02)), float(s.quantile(0.98))
    centres = torch.linspace(lo, hi, steps + 2, dtype=torch.float64)[1:-1]
    width = max((hi - lo) / (steps + 1), 1e-3)
    mean, std = s.mean(), s.std().clamp_min(1e-6)
    theta = torch.zeros(steps + 2, dtype=torch.float64)  # bias, log slope, log step weights
    theta[2:] = -3.0
    theta.requires_grad_(True)

    def curve(v: torch.Tensor) -> torch.Tensor:
        steps_ = torch.sigmoid((v.unsqueeze(1) - centres) / width)
        return theta[0] + torch.exp(theta[1]) * (v - mean) / std + (torch.exp(theta[2:]) * steps_).sum(dim=1)

    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(curve(s), right)
        loss.backward()
        return loss

    opt.step(closure)
    chance = math.log(1 / (z.shape[1] - 1))  # log-odds of 1/C: the top probability of indifferent logits
    floor = float(s.quantile(0.01))  # below the lowest 1% of the data the fit is extrapolation
    with torch.no_grad():
        xs = torch.linspace(chance, math.log(0.9999 / 0.0001), points, dtype=torch.float64)
        ys = curve(xs)
        if floor > chance:  # ...so run it straight (in log-odds) down to chance level at x = 1/C
            at_floor = float(curve(torch.tensor([floor], dtype=torch.float64)))
            start = min(chance, at_floor)
            below = xs < floor
            ys[below] = start + (xs[below] - chance) * (at_floor - start) / (floor - chance)
        if not torch.isfinite(ys).all():
            # Where every validation picture in a range of confidence is right, the likelihood has no
            # maximum and the step weights run away: no map is better than a broken one.
            return None
        ys = torch.sigmoid(ys).clamp(1e-6, 1 - 1e-6)
        ys = torch.cummax(ys, dim=0).values  # increasing already; guards rounding
    return [[round(float(a), 6), round(float(b), 6)] for a, b in zip(torch.sigmoid(xs), ys)]


# --- how honest are the probabilities -----------------------------------------------------------


def quality(probs: TensorLike, labels: TensorLike, bins: int = 15) -> dict[str, float]:
    """``{"ece": ..., "nll": ..., "brier": ...}`` of these probabilities (see the three functions)."""
    return {"ece": expected_calibration_error(probs, labels, bins), "nll": negative_log_likelihood(probs, labels),
            "brier": brier_score(probs, labels)}


def reliability_bins(probs: TensorLike, labels: TensorLike, bins: int = 15
                     ) -> list[tuple[float, float, int, float, float]]:
    """Top-label reliability table: ``(low, high, count, mean confidence, accuracy)`` for each of
    ``bins`` equal-width confidence bins over (0, 1] (a bin holds ``low < confidence <= high``;
    empty bins have count 0 and NaN means)."""
    p = _float64(probs)
    y = _labels(labels)
    _check_pair(p, y)
    conf, pred = p.max(dim=1)
    right = (pred == y).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(conf, edges[1:-1], right=False)  # edges[i-1] < conf <= edges[i]
    out = []
    for i in range(bins):
        m = index == i
        n = int(m.sum())
        mc = float(conf[m].mean()) if n else float("nan")
        acc = float(right[m].mean()) if n else float("nan")
        out.append((float(edges[i]), float(edges[i + 1]), n, mc, acc))
    return out


def expected_calibration_error(probs: TensorLike, labels: TensorLike, bins: int = 15) -> float:
    """Top-label expected calibration error: the count-weighted mean over ``bins`` equal-width
    confidence bins over (0, 1] of |mean top probability - accuracy| (0 is perfect; a fraction,
    not percent)."""
    table = reliability_bins(probs, labels, bins)
    total = sum(n for _, _, n, _, _ in table)
    return float(sum(n * abs(c - a) for _, _, n, c, a in table if n) / total)


def negative_log_likelihood(probs: TensorLike, labels: TensorLike) -> float:
    """Mean over pictures of -ln(probability given to the true class), probabilities clamped at
    1e-12 (nats; lower is better)."""
    p = _float64(probs)
    y = _labels(labels)
    _check_pair(p, y)
    return float(-torch.log(p[torch.arange(len(y)), y].clamp_min(_EPS)).mean())


def brier_score(probs: TensorLike, labels: TensorLike) -> float:
    """Multi-class Brier score (Brier 1950): mean over pictures of the sum over all classes of
    (probability - one-hot truth)^2. Ranges 0 (perfect) to 2; not divided by the number of classes."""
    p = _float64(probs)
    y = _labels(labels)
    _check_pair(p, y)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    return float(((p - onehot) ** 2).sum(dim=1).mean())


# --- the reliability diagram ---------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def reliability_diagram(probs: TensorLike, labels: TensorLike, bins: int = 15,
                        title: str = "Reliability diagram", size: int = 480) -> Image.Image:
    """A ``size`` x ``size`` RGB chart of top-label calibration, drawn with PIL.

    Bars: accuracy in each confidence bin (equal width over (0, 1]); red shading: the gap between
    the bar and the bin's mean confidence (above the bar: over-confident; below its top:
    under-confident); dashed diagonal: perfect calibration; grey strip along the bottom: the share
    of pictures in each bin. The ECE, the count and the accuracy are written in the corner.
    """
    table = reliability_bins(probs, labels, bins)
    p = _float64(probs)
    y = _labels(labels)
    ece = expected_calibration_error(p, y, bins)
    accuracy = float((p.argmax(dim=1) == y).double().mean())
    k = size / 480
    img = Image.new("RGB", (size, size), "white")
    over = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw, shade = ImageDraw.Draw(img), ImageDraw.Draw(over)
    f_title, f_text, f_small = _font(round(17 * k)), _font(round(14 * k)), _font(round(12 * k))
    left, top, right, bottom = round(62 * k), round(40 * k), size - round(16 * k), size - round(58 * k)
    w, h = right - left, bottom - top

    def px(cx: float, cy: float) -> tuple[float, float]:
        return left + cx * w, bottom - cy * h

    draw.text((size / 2, round(10 * k)), title, fill="black", font=f_title, anchor="mt")
    for t in range(6):  # grid and ticks every 0.2
        v = t / 5
        x, yy = px(v, v)
        draw.line([(x, top), (x, bottom)], fill=(232, 232, 232))
        draw.line([(left, yy), (right, yy)], fill=(232, 232, 232))
        draw.text((x, bottom + round(4 * k)), f"{v:.1f}", fill="black", font=f_small, anchor="mt")
        draw.text((left - round(5 * k), yy), f"{v:.1f}", fill="black", font=f_small, anchor="rm")
    total = max(sum(n for _, _, n, _, _ in table), 1)
    strip = round(10 * k)
    for lo, hi, n, conf, acc in table:
        if not n:
            continue
        x0, _ = px(lo, 0)
        x1, _ = px(hi, 0)
        _, ya = px(0, acc)
        draw.rectangle([x0 + 1, ya, x1 - 1, bottom], fill=(66, 110, 196), outline=(30, 60, 130))
        _, yc = px(0, conf)
        _hatch(over, (x0 + 1, min(ya, yc), x1 - 1, max(ya, yc)), k)
        share = n / total  # grey strip: darker = more pictures (sqrt so small bins still show)
        g = round(235 - 200 * math.sqrt(share))
        shade.rectangle([x0 + 1, bottom - strip, x1 - 1, bottom], fill=(g, g, g, 255))
    img.paste(over, (0, 0), over)
    draw = ImageDraw.Draw(img)
    x, yy = left, bottom  # dashed diagonal
    dash = 8 * k
    steps = int(math.hypot(w, h) / dash)
    for i in range(0, steps, 2):
        a, b = i / steps, min((i + 1) / steps, 1)
        draw.line([px(a, a), px(b, b)], fill=(40, 40, 40), width=max(1, round(2 * k)))
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, size - round(8 * k)), "confidence (top probability)", fill="black",
              font=f_text, anchor="mb")
    label = Image.new("RGBA", (h, round(20 * k)), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((h / 2, round(10 * k)), "accuracy", fill="black", font=f_text, anchor="mm")
    label = label.rotate(90, expand=True)
    img.paste(label, (round(4 * k), top), label)
    box = [left + round(8 * k), top + round(8 * k), left + round(212 * k), top + round(128 * k)]
    draw.rectangle(box, fill="white", outline=(160, 160, 160))
    lines = [f"ECE {ece:.1%} ({bins} bins)", f"accuracy {accuracy:.1%}", f"{total:,} pictures"]
    for i, line in enumerate(lines):
        draw.text((box[0] + round(7 * k), box[1] + round((6 + 19 * i) * k)), line, fill="black", font=f_text)
    legend = [((66, 110, 196), "accuracy in the bin"), (None, "gap to mean confidence"),
              ((140, 140, 140), "share of pictures (strip)")]
    for i, (colour, text) in enumerate(legend):
        y0 = box[1] + round((66 + 18 * i) * k)
        swatch = (box[0] + round(7 * k), y0 + round(2 * k), box[0] + round(19 * k), y0 + round(14 * k))
        if colour is None:
            patch = Image.new("RGBA", img.size, (0, 0, 0, 0))
            _hatch(patch, swatch, k)
            img.paste(patch, (0, 0), patch)
            draw = ImageDraw.Draw(img)
        else:
            draw.rectangle(swatch, fill=colour, outline=(60, 60, 60))
        draw.text((box[0] + round(25 * k), y0), text, fill="black", font=f_small)
    return img


def _hatch(layer: Image.Image, box: tuple[float, float, float, float], k: float) -> None:
    """Red diagonal hatching with a red outline over ``box`` of an RGBA ``layer``: visible both on a
    bar (under-confident bins) and on white (over-confident bins)."""
    x0, y0, x1, y1 = (round(v) for v in box)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    if w < 2 or h < 2:
        return
    tile = Image.new("RGBA", (w, h), (230, 60, 60, 70))
    d = ImageDraw.Draw(tile)
    step = max(4, round(7 * k))
    for i in range(-h, w, step):
        d.line([(i, h), (i + h, 0)], fill=(200, 20, 20, 255), width=max(1, round(k)))
    d.rectangle([0, 0, w - 1, h - 1], outline=(170, 20, 20, 255), width=max(1, round(1.5 * k)))
    layer.alpha_composite(tile, (x0, y0))


# --- the unsure rule ------------------------------------------------------------------------------


def energy_score(logits: TensorLike) -> torch.Tensor:
    """:func:`is_unfamiliar`'s score: ``logsumexp`` of the raw (uncalibrated) logits, i.e. minus the
    energy ``-T logsumexp(logits / T)`` at T = 1 (Liu et al. 2020). Low = unlike the training pictures."""
    z = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    return torch.logsumexp(z.detach().float(), dim=-1)


def fit_unfamiliar_threshold(logits: TensorLike, rate: float = UNFAMILIAR_RATE) -> float:
    """The :func:`energy_score` below which ``rate`` of these (validation) pictures fall."""
    return float(torch.quantile(energy_score(logits).double(), rate))


def is_unfamiliar(logits: TensorLike, threshold: float) -> bool | torch.Tensor:
    """True where :func:`energy_score` of the raw logits is below ``threshold`` (from
    :func:`fit_unfamiliar_threshold`): the picture probably shows none of the ten classes, or is one
    the model gets wrong about half the time. ``C`` logits -> bool; ``N x C`` -> bool tensor."""
    score = energy_score(logits) < threshold
    return bool(score) if score.ndim == 0 else score
