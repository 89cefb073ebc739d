"""Calibration and the unsure rule, fitted on held-out pictures, and how honest the result is.

    python -m train.calibrate WEIGHTS_DIR --data PATH [--write]

:func:`fit` gives a network's calibration (``Config`` fields) from its validation logits: a
temperature minimising the NLL, a monotone map of the top probability fitted to how often answers
that sure were right, and the unsure threshold. :func:`figures` scores it on the test split (ECE, NLL,
Brier before and after, the per-bin reliability table, how often the unsure rule fires and how often
the answer is right when it does). The test split is only ever scored, never fitted on.

Why two steps: the shipped network was trained with label smoothing, which makes it under-confident
(mean top probability ~76% at ~91% accuracy) and squashes its surest answers together near 0.98. One
temperature removes most of the gap but leaves the middle confidences about 10 points too high; the
map removes the rest. Neither changes the answer (benchmarks/results/2026-11-26-cpu-calibration.log).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from cifar_model import Config, Metrics, Rule, load, tta_logits
from cifar_model.classifier import unsure_score
from cifar_model.weights import CONFIG_FILE, METRICS_FILE, read_record, write_record

from . import data as datasets
from .recipe import split_train_val
from .report import render_card

# The unsure rule fires on this share of the validation pictures (its threshold is fitted there): a little
# under 10%, so that on the test split, 10,000 other pictures, it stays under 10% despite sampling (at
# 10% of validation the shipped weights' rule fired on 10.5% of the test split).
UNSURE_RATE = 0.095
# The map's number of logistic steps: of 4, 6, 8, 12 and 16, the lowest 5-fold cross-validated ECE on
# the shipped weights' validation hold-out.
MAP_STEPS = 16
BINS = 15  # ECE's equal-width confidence bins over (0, 1], as in the literature for CIFAR-10


def fit(val_logits: torch.Tensor, val_labels: torch.Tensor) -> dict:
    """The ``Config`` calibration fields for a network, from its validation logits and labels only."""
    temperature = fit_temperature(val_logits, val_labels)
    return {"temperature": temperature, "top_label_map": fit_top_label_map(val_logits, val_labels, temperature),
            "unsure_threshold": float(torch.quantile(unsure_score(val_logits).double(), 1 - UNSURE_RATE))}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T in [0.01, 100] minimising the NLL of ``softmax(logits / T)``.

    The NLL is convex in 1/T, so its derivative in 1/T is increasing: a bisection on log(1/T) finds
    the minimum without a learning rate or a starting point (deterministic; float64). Returns a bound
    when the minimum lies beyond it.
    """
    z = logits.double()
    target = z[torch.arange(len(labels)), labels]

    def slope(log_beta: float) -> float:  # d NLL / d beta at beta = exp(log_beta)
        p = torch.softmax(z * math.exp(log_beta), dim=1)
        return float(((p * z).sum(dim=1) - target).mean())

    lo, hi = math.log(1 / 100), math.log(1 / 0.01)
    if slope(lo) >= 0:
        return 100.0
    if slope(hi) <= 0:
        return 0.01
    for _ in range(50):  # pragma: no mutate (9.2 wide in log(1/T): 2^-50 of it is below float64's step)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return float(1 / math.exp((lo + hi) / 2))


def fit_top_label_map(logits: torch.Tensor, labels: torch.Tensor, temperature: float, *, steps: int = MAP_STEPS,
                      points: int = 48) -> list[list[float]]:
    """Knots ``[[x, y], ...]`` for ``Config.top_label_map``: a smooth increasing map from the
    temperature-scaled top probability x to the chance y that the top class is right.

    In log-odds, a linear term plus ``steps`` logistic steps evenly spread between the 2nd and 98th
    percentiles of the data, all with positive weights (so the map increases), fitted by maximum
    likelihood of "the top class is right" with L-BFGS from a fixed start in float64. A small ridge
    penalty on the log step weights keeps the fit finite where the likelihood alone has no maximum (every
    picture in a range of confidence right): without it the weights run away, and where the optimiser
    stops depends on the CPU's rounding. Below the lowest 1% of the data, where a fit would only
    extrapolate, the map runs straight (in log-odds) down to chance level (x = y = 1/C). Sampled at
    ``points`` knots evenly spaced in log-odds from x = 1/C to 0.9999.
    """
    z = logits.double() / temperature
    top, arg = torch.softmax(z, dim=1).max(dim=1)
    right = (arg == labels).double()
    s = torch.logit(top.clamp(1e-9, 1 - 1e-9))
    lo, hi = float(s.quantile(0.02)), float(s.quantile(0.98))
    centres = torch.linspace(lo, hi, steps + 2, dtype=torch.float64)[1:-1]
    width = max((hi - lo) / (steps + 1), 1e-3)
    mean, std = s.mean(), s.std(correction=0).clamp_min(1e-6)  # one picture: 0, not NaN
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
        loss = loss + 1e-4 * ((theta[1:] + 3) ** 2).mean()  # the ridge: a weak pull towards the start
        loss.backward()
        return loss

    opt.step(closure)
    chance = math.log(1 / (z.shape[1] - 1))  # log-odds of 1/C: the top probability of indifferent logits
    floor = float(s.quantile(0.01))
    with torch.no_grad():
        xs = torch.linspace(chance, math.log(0.9999 / 0.0001), points, dtype=torch.float64)
        ys = curve(xs)
        if floor > chance:
            at_floor = float(curve(torch.tensor([floor], dtype=torch.float64)))
            start = min(chance, at_floor)
            below = xs < floor
            ys[below] = start + (xs[below] - chance) * (at_floor - start) / (floor - chance)
        ys = torch.cummax(torch.sigmoid(ys).clamp(1e-6, 1 - 1e-6), dim=0).values
    return [[round(float(a), 6), round(float(b), 6)] for a, b in zip(torch.sigmoid(xs), ys)]


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> list[list[float]]:
    """Top-label reliability table: ``[count, mean confidence, accuracy]`` for each of ``bins``
    equal-width confidence bins over (0, 1] (a bin holds low < confidence <= high; empty: zeros)."""
    conf, pred = probs.double().max(dim=1)
    right = (pred == labels).double()
    index = torch.bucketize(conf, torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1])
    rows = []
    for i in range(bins):
        m = index == i
        n = int(m.sum())
        rows.append([n, float(conf[m].mean()) if n else 0.0, float(right[m].mean()) if n else 0.0])
    return rows


def quality(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """ECE (top label, 15 bins: the count-weighted mean |confidence - accuracy|), NLL (mean -ln of the
    true class's probability, clamped at 1e-12) and Brier score (mean squared distance to one-hot,
    summed over classes: 0 to 2) of these probabilities; lower is better for all three."""
    p = probs.double()
    ece = sum(n * abs(c - a) for n, c, a in reliability(p, labels)) / len(labels)
    nll = float(-torch.log(p[torch.arange(len(labels)), labels].clamp_min(1e-12)).mean())
    brier = float(((p - torch.nn.functional.one_hot(labels, p.shape[1])) ** 2).sum(dim=1).mean())
    return {"ece": float(ece), "nll": nll, "brier": brier}


def figures(rule: Rule, test_logits: torch.Tensor, test_labels: torch.Tensor) -> dict:
    """The calibration and unsure fields of :class:`Metrics`, measured on the test split with ``rule``."""
    before = quality(torch.softmax(test_logits, dim=1), test_labels)
    probs = rule.calibrate(test_logits)
    right = probs.argmax(1) == test_labels
    unsure = unsure_score(test_logits) > rule.threshold
    return {"temperature": rule.temperature, **quality(probs, test_labels),
            **{f"{k}_uncalibrated": v for k, v in before.items()},
            "reliability": reliability(probs, test_labels), "unsure_rate": float(unsure.double().mean()),
            "unsure_accuracy": float(right[unsure].double().mean()) if unsure.any() else None,
            "sure_accuracy": float(right[~unsure].double().mean()) if (~unsure).any() else None}


def logits_of(net: torch.nn.Module, config: Config, pictures, batch: int = 2500) -> torch.Tensor:
    """Flip-averaged raw logits (the library's rule) of uint8 N x 32 x 32 x 3 numpy pictures, on the
    CPU, computed on ``net``'s device."""
    device = next(net.parameters()).device
    with torch.inference_mode():
        return torch.cat([tta_logits(net, torch.from_numpy(pictures[i:i + batch]).to(device), config.mean, config.std
                                     ).cpu() for i in range(0, len(pictures), batch)])


def calibrate_folder(folder: str | Path, data: str | datasets.Cifar, write: bool = False, log=print) -> dict:
    """Refit ``folder``'s calibration on its own validation hold-out (``val_size`` and ``seed`` from its
    metrics.json, split as training split it) and print the figures before and after on both splits.
    With ``write``, ``config.json`` gets the calibration and ``metrics.json`` the test figures.

    Raises:
        ValueError: no readable metrics.json, or the run held nothing out (there is then nothing to
            calibrate on without touching the test split).
    """
    folder = Path(folder)
    metrics = read_record(Metrics, folder / METRICS_FILE)
    val_size, seed = int(metrics.config.get("val_size", 0)), int(metrics.config.get("seed", 0))
    if val_size <= 0:
        raise ValueError(f"{folder / METRICS_FILE}: this run held nothing out of training, so there are no "
                         "validation pictures to calibrate on (the test split must not be used).")
    cifar = data if isinstance(data, datasets.Cifar) else datasets.load(str(data))
    _, _, val_x, val_y = split_train_val(cifar.train_images, cifar.train_labels, val_size, seed)
    weights = load(folder)
    val_logits = logits_of(weights.model, weights.config, val_x)
    test_logits = logits_of(weights.model, weights.config, cifar.test_images)
    val_y, test_y = torch.from_numpy(val_y), torch.from_numpy(cifar.test_labels)
    config = replace(weights.config, **fit(val_logits, val_y))
    rule = Rule(weights.model, config)
    log(f"{folder}: fitted on {len(val_y):,} validation pictures (val_size {val_size}, seed {seed}): "
        f"T = {config.temperature:.4f}, a {len(config.top_label_map)}-knot top-label map, unsure above "
        f"{config.unsure_threshold:.3f}")
    log("| split | calibration | accuracy | mean top probability | ECE | NLL | Brier |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    for split, logits, labels in (("validation", val_logits, val_y), ("test", test_logits, test_y)):
        for name, probs in (("none", torch.softmax(logits, 1)),
                            ("temperature", torch.softmax(logits / config.temperature, 1)),
                            ("temperature + map", rule.calibrate(logits))):
            q = quality(probs, labels)
            log(f"| {split} | {name} | {(probs.argmax(1) == labels).double().mean():.2%} | "
                f"{probs.max(1).values.double().mean():.2%} | {q['ece']:.2%} | {q['nll']:.4f} | {q['brier']:.4f} |")
    measured = figures(rule, test_logits, test_y)
    if write:
        write_record(config, folder / CONFIG_FILE)
        write_record(replace(metrics, **measured), folder / METRICS_FILE)
        render_card(folder)
        log(f"wrote {folder / CONFIG_FILE}, {folder / METRICS_FILE} and the card")
    return {"config": config, **measured}


def main(argv: list[str] | None = None) -> int:
    # The options' help text is wording, not behaviour: not mutated.
    p = argparse.ArgumentParser(prog="python -m train.calibrate",  # pragma: no mutate
                                description=__doc__.splitlines()[0])  # pragma: no mutate
    p.add_argument("folder", type=Path, help="weights folder written by python -m train")  # pragma: no mutate
    p.add_argument("--data", required=True, help="the dataset it was trained on")  # pragma: no mutate
    p.add_argument("--write", action="store_true", help="update config.json and metrics.json")  # pragma: no mutate
    args = p.parse_args(argv)
    try:
        calibrate_folder(args.folder, args.data, write=args.write)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
