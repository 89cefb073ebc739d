"""Mutation testing of the pure logic, with mutmut (pinned in requirements-dev.txt): how many small
changes to the code (``<`` for ``<=``, ``+ 1`` for ``- 1``, a dropped argument...) the fast tests notice.

    python -m benchmarks.mutation                        # every module below, within 60 minutes
    python -m benchmarks.mutation --module preprocess --module app --max-minutes 15

Each module is mutated on its own, with only its fast tests (never the browser tests, the served-app
tests or the full test split), in a scratch copy of the repository under ``mutants/<module>/`` (git
ignores it): a copy of the source, the tests, ``weights/`` and ``examples/``, and a ``pyproject.toml``
with a ``[tool.mutmut]`` section written from ``MODULES`` below. There mutmut runs
``mutmut run --max-children 2`` (2 cores; ``--max-children N`` to change it), under ``nice``. Only the
functions named in ``MODULES`` are mutated: the lines of the file's other functions are handed to mutmut as
``do_not_mutate_patterns``. A module that would run past ``--max-minutes`` (counted from the start,
for all modules together) is stopped; its unchecked mutants are counted as such, not as killed.

The report, ``benchmarks/results/2026-11-26-cpu-mutation.log``, has per module: mutants, killed,
survived, timeouts, not checked, the score (killed + timeouts over mutants less the ones listed as
equivalent in ``EQUIVALENT``) and each survivor with its file, line and the mutation; a survivor
listed in ``EQUIVALENT`` is shown with the reason it cannot change what a caller sees. mutmut counts a
mutant whose tests run past 3x their time plus 10 s (wall clock) as a timeout, and timeouts as killed;
each timeout is listed with its mutation, so a reader can tell a real hang (a loop that no longer ends)
from a slow run.

Each mutant's tests run in a process forked from mutmut's fork server, which has imported the tests but
run nothing: forked from a process in which torch had used its thread pool, the tests hung at their
first parallel operation, and every such mutant counted as a (false) timeout.

Run it under ``nice``; pass ``--max-minutes`` to bound it. Times per module are in the log.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "2026-11-26-cpu-mutation.log"
SCRATCH = ROOT / "mutants"
COPY = ["cifar_model", "train", "app.py", "tests", "weights", "examples", "pyproject.toml"]


@dataclass
class Module:
    files: dict[str, list[str] | None]  # file -> the functions (or classes) to mutate; None: all
    tests: list[str]  # pytest arguments: the module's fast tests
    skip: dict[str, str] = field(default_factory=dict)  # function -> why it is not mutated


MODULES: dict[str, Module] = {
    "preprocess": Module({"cifar_model/preprocess.py": None},
                         ["tests/test_preprocess.py", "tests/test_mutants_preprocess.py"]),
    "calibration": Module(
        {"cifar_model/calibration.py": None},
        ["tests/test_calibration.py", "tests/test_mutants_calibration.py"],
        skip={"reliability_diagram": "drawing code: its pixels are checked by eye, not by a behavioural test",
              "_font": "drawing code (the diagram's font)", "_hatch": "drawing code (the diagram's hatching)"}),
    "weights": Module({"cifar_model/weights.py": None},
                      ["tests/test_weights.py", "tests/test_model.py", "tests/test_mutants_weights.py",
                       "tests/test_hub.py", "-k",
                       # not the shipped weights' accuracy checks (11 s a mutant): they test the network, not
                       # the config checks, which every other test here goes through
                       "not full_test_split and not score_at_least and not bf16_and_fp32"]),
    "metrics_model": Module({"cifar_model/metrics.py": None, "cifar_model/model.py": None},
                            ["tests/test_card.py", "tests/test_model.py", "tests/test_weights.py",
                             "tests/test_mutants_metrics.py", "-k",
                             "not full_test_split and not score_at_least and not bf16_and_fp32"]),
    "classifier": Module(
        {"cifar_model/classifier.py": ["tta_logits", "_fused_for_inference", "_pick_precision", "Classifier"],
         "cifar_model/explain.py": None},
        ["tests/test_model.py", "tests/test_mutants_classifier.py"]),
    # The served-app tests (tests/test_security.py, most of tests/test_app.py) start a Gradio server:
    # too slow to run once per mutant. These functions are called directly here, as the server calls them.
    "app": Module({"app.py": ["RequestLimits", "_folder_bytes", "_refuse", "_read_capped", "_replay",
                              "image_source", "unsure_notice", "enlarge", "heat_overlay", "_fresh_copies",
                              "Handlers"]},
                  ["tests/test_mutants_app.py"]),
    "train_data": Module(
        {"train/data.py": ["_where", "_read_tree", "_read_tar", "_plan_tar", "_decode_one", "_decode"],
         "train/recipe.py": ["split_train_val"]},
        ["tests/test_train_data.py", "tests/test_train.py"]),
}

# Survivors that no test can kill because the mutant behaves exactly like the original:
# (file, the line, the mutated line, both stripped) -> why.
_NAN = "a = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)"
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("cifar_model/preprocess.py", _NAN, "a = np.nan_to_num(raw.astype(np.float64), posinf=0.0, neginf=0.0)"):
        "without nan=0.0 numpy's default replaces NaN by 0.0 all the same",
    ("cifar_model/preprocess.py", _NAN, "a = np.nan_to_num(raw.astype(None), nan=0.0, posinf=0.0, neginf=0.0)"):
        "astype(None) is astype(float64): numpy's default float type",
}
_DRAFT = 'img.draft("RGB", (draft_size, draft_size))'
_RGB = 'return img if img.mode == "RGB" else img.convert("RGB")'
_RESIZE = "return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side),"
_ARRAY = "return np.array(center_square_resize(to_rgb(img), size), dtype=np.uint8)"
_PRE_WHY = {
    "draft": 'JpegImageFile.draft uses its mode only when it is "L" or "YCbCr": "RGB", None or any other '
             "string leave the decoder's colour mode alone (same pixels for RGB, grey, CMYK JPEGs and MPO)",
    "rgb": 'convert("RGB") of an RGB picture is a copy with the same pixels: only one more copy',
    "fill": "Pillow clips a fill colour's components to 0..255: an alpha of 256 is 255",
    "bicubic": "Pillow's resize turns resample=None (its default) into BICUBIC",
    "uint8": "to_rgb always returns an RGB picture, and np.array of one is uint8 already",
    "view": "x is always 4-D here (3-D input is unsqueezed first): a (3, 1, 1) tensor broadcasts over it "
            "exactly as (1, 3, 1, 1) does",
}
_PRE_SAME = [
    (_DRAFT, 'img.draft(None, (draft_size, draft_size))', "draft"),
    (_DRAFT, 'img.draft("XXRGBXX", (draft_size, draft_size))', "draft"),
    (_DRAFT, 'img.draft("rgb", (draft_size, draft_size))', "draft"),
    (_RGB, 'return img if (img.mode == "RGB") and False else img.convert("RGB")', "rgb"),
    (_RGB, 'return img if img.mode == "XXRGBXX" else img.convert("RGB")', "rgb"),
    (_RGB, 'return img if img.mode == "rgb" else img.convert("RGB")', "rgb"),
    ('background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))',
     'background = Image.new("RGBA", rgba.size, BACKGROUND + (256,))', "fill"),
    (_RESIZE, _RESIZE.replace("Image.Resampling.BICUBIC", "None"), "bicubic"),
    (_RESIZE, _RESIZE.replace("Image.Resampling.BICUBIC, ", ""), "bicubic"),
    (_ARRAY, _ARRAY.replace("dtype=np.uint8", "dtype=None"), "uint8"),
    (_ARRAY, _ARRAY.replace("dtype=np.uint8", ""), "uint8"),
    ("m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)",
     "m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(3, 1, 1)", "view"),
    ("s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)",
     "s = torch.tensor(std, device=x.device, dtype=x.dtype).view(3, 1, 1)", "view"),
]
EQUIVALENT.update({("cifar_model/preprocess.py", before, after): _PRE_WHY[why] for before, after, why in _PRE_SAME})

# calibration: reasons, then (line, mutated line, reason) as `python -m benchmarks.mutation` lists them
_CAL_WHY = {
    'dev':
        "device placement only: the same tensors on the CPU, where the fast tests and the app's CPU path run",
    'topclamp':
        'the top probability is at least 1/C, never below 1e-12; and logit(1.0) = inf is clamped to the last knot b'
        'y _interp all the same',
    'rest0':
        'where rest == 0 the other classes are all exactly 0 (and so is the runner-up): both branches give 0 there',
    'interp_i':
        'v is clamped into [xs[0], xs[-1]] first, so searchsorted gives 0..len(xs)-1; at 0 (v == xs[0]) the index -'
        '1 wraps to the last knot and t = 1 gives ys[0] all the same',
    'bucketize':
        "right=False is torch.bucketize's default",
    'nan':
        "an empty bin's mean is NaN either way (float('NAN') is float('nan'); the mean of no values is nan)",
    'iters':
        'a 51st halving moves T by under 1e-14 relative: the bracket is 9.2 * 2^-50 wide after 50',
    'tie':
        "differs only where the NLL's slope is exactly 0.0 at a bisection midpoint: that is the minimum, which both"
        ' sides of the bracket then converge to',
    'lower9':
        'the top probability is at least 1/C, never below 1e-9: the lower clamp never binds',
    'prec64':
        'float32 instead of float64 for an internal tensor: the knots move by under 1e-6 (they are rounded to 6 dec'
        'imals); the fit is the same',
    'start':
        "L-BFGS's starting point only: the same likelihood is maximised to the same map (the tests' fits agree to 0"
        '.04)',
    'lbfgs':
        "L-BFGS settings only (lr=1 is the default; tolerances, the step's first length, one more iteration): the s"
        'ame likelihood is maximised to the same map',
    'scale':
        "the linear term's scale is a free parameter (exp(theta[1])): dividing or multiplying by std only moves whe"
        're L-BFGS starts',
    'width':
        "the steps' width 1/15 or 1/18 of the data's spread instead of 1/17: a smoothing choice among equally valid"
        " ones; the fitted maps agree within the tests' 0.04",
    'eqfloor':
        'differs only where the 1% quantile is exactly the chance log-odds (or a knot falls exactly on it): both br'
        'anches then give the same value',
    'points':
        'the number of knots sampled (48 by default) is a tuning default, not behaviour: 49 evenly spaced knots sam'
        'ple the same curve',
    'round7':
        "one more decimal in the returned knots moves each by under 5e-7, far below the map's precision; nothing re"
        'ads the 7th decimal',
    'knotdtype':
        'np.asarray of a list of floats is float64 already; knots given as a float32 array differ by float32 roundi'
        'ng only (test_knots_may_come_as_a_float32_array)',
    'labels':
        'labels are integers: no gradient to detach, and np.asarray and torch.as_tensor give the same int64 labels '
        'for lists, arrays and CPU tensors',
}
_CAL_SAME: list[tuple[str, str, str]] = [
    ('rows = torch.arange(len(p), device=p.device)',
     'rows = torch.arange(len(p), device=None)', 'dev'),
    ('rows = torch.arange(len(p), device=p.device)',
     'rows = torch.arange(len(p), )', 'dev'),
    ('knots = (knots[0].to(p.device), knots[1].to(p.device))',
     'knots = (knots[0].to(None), knots[1].to(p.device))', 'dev'),
    ('knots = (knots[0].to(p.device), knots[1].to(p.device))',
     'knots = (knots[0].to(p.device), knots[1].to(None))', 'dev'),
    ('new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 - 1e-12)), *knots))',
     'new_top = torch.sigmoid(_interp(torch.logit(top.clamp(None, 1 - 1e-12)), *knots))', 'topclamp'),
    ('new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 - 1e-12)), *knots))',
     'new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, None)), *knots))', 'topclamp'),
    ('new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 - 1e-12)), *knots))',
     'new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, )), *knots))', 'topclamp'),
    ('new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 - 1e-12)), *knots))',
     'new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 + 1e-12)), *knots))', 'topclamp'),
    ('new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 1 - 1e-12)), *knots))',
     'new_top = torch.sigmoid(_interp(torch.logit(top.clamp(1e-12, 2 - 1e-12)), *knots))', 'topclamp'),
    ('floor = torch.where(rest > 0, lead / (rest + lead).clamp_min(1e-300), torch.zeros_like(rest))',
     'floor = torch.where(rest >= 0, lead / (rest + lead).clamp_min(1e-300), torch.zeros_like(rest))', 'rest0'),
    ('scale = torch.where(rest > 0, (1 - new_top) / rest.clamp_min(1e-300), torch.zeros_like(rest))',
     'scale = torch.where(rest >= 0, (1 - new_top) / rest.clamp_min(1e-300), torch.zeros_like(rest))', 'rest0'),
    ('i = torch.searchsorted(xs, v).clamp(1, len(xs) - 1)',
     'i = torch.searchsorted(xs, v).clamp(None, len(xs) - 1)', 'interp_i'),
    ('i = torch.searchsorted(xs, v).clamp(1, len(xs) - 1)',
     'i = torch.searchsorted(xs, v).clamp(1, None)', 'interp_i'),
    ('i = torch.searchsorted(xs, v).clamp(1, len(xs) - 1)',
     'i = torch.searchsorted(xs, v).clamp(1, )', 'interp_i'),
    ('i = torch.searchsorted(xs, v).clamp(1, len(xs) - 1)',
     'i = torch.searchsorted(xs, v).clamp(1, len(xs) + 1)', 'interp_i'),
    ('index = torch.bucketize(conf, edges[1:-1], right=False)  # edges[i-1] < conf <= edges[i]',
     'index = torch.bucketize(conf, edges[1:-1], )  # edges[i-1] < conf <= edges[i]', 'bucketize'),
    ('mc = float(conf[m].mean()) if n else float("nan")',
     'mc = float(conf[m].mean()) if (n) or True else float("nan")', 'nan'),
    ('acc = float(right[m].mean()) if n else float("nan")',
     'acc = float(right[m].mean()) if (n) or True else float("nan")', 'nan'),
    ('mc = float(conf[m].mean()) if n else float("nan")',
     'mc = float(conf[m].mean()) if n else float("NAN")', 'nan'),
    ('acc = float(right[m].mean()) if n else float("nan")',
     'acc = float(right[m].mean()) if n else float("NAN")', 'nan'),
    ("for _ in range(50):  # the bracket is 9.2 wide in log(1/T): 2^-50 of it is below float64's step",
     "for _ in range(51):  # the bracket is 9.2 wide in log(1/T): 2^-50 of it is below float64's step", 'iters'),
    ('lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)',
     'lo, hi = (mid, hi) if slope(mid) <= 0 else (lo, mid)', 'tie'),
    ('s = torch.logit(top.clamp(1e-9, 1 - 1e-9))',
     's = torch.logit(top.clamp(None, 1 - 1e-9))', 'lower9'),
    ('centres = torch.linspace(lo, hi, steps + 2, dtype=torch.float64)[1:-1]',
     'centres = torch.linspace(lo, hi, steps + 2, dtype=None)[1:-1]', 'prec64'),
    ('centres = torch.linspace(lo, hi, steps + 2, dtype=torch.float64)[1:-1]',
     'centres = torch.linspace(lo, hi, steps + 2, )[1:-1]', 'prec64'),
    ('theta = torch.zeros(steps + 2, dtype=torch.float64)  # bias, log slope, log step weights',
     'theta = torch.zeros(steps + 2, dtype=None)  # bias, log slope, log step weights', 'prec64'),
    ('theta = torch.zeros(steps + 2, dtype=torch.float64)  # bias, log slope, log step weights',
     'theta = torch.zeros(steps + 2, )  # bias, log slope, log step weights', 'prec64'),
    ('at_floor = float(curve(torch.tensor([floor], dtype=torch.float64)))',
     'at_floor = float(curve(torch.tensor([floor], dtype=None)))', 'prec64'),
    ('at_floor = float(curve(torch.tensor([floor], dtype=torch.float64)))',
     'at_floor = float(curve(torch.tensor([floor], )))', 'prec64'),
    ('theta[2:] = -3.0',
     'theta[3:] = -3.0', 'start'),
    ('theta[2:] = -3.0',
     'theta[2:] = +3.0', 'start'),
    ('theta[2:] = -3.0',
     'theta[2:] = -4.0', 'start'),
    ('opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,',
     'opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,', 'lbfgs'),
    ('opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,',
     'opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_change=1e-14,', 'lbfgs'),
    ('opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14, / line_sea'
     'rch_fn="strong_wolfe")',
     'opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, '
     'line_search_fn="strong_wolfe")', 'lbfgs'),
    ('opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,',
     'opt = torch.optim.LBFGS([theta], lr=2, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,', 'lbfgs'),
    ('opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14,',
     'opt = torch.optim.LBFGS([theta], lr=1, max_iter=501, tolerance_grad=1e-10, tolerance_change=1e-14,', 'lbfgs'),
    ('return theta[0] + torch.exp(theta[1]) * (v - mean) / std + (torch.exp(theta[2:]) * steps_).sum(dim=1)',
     'return theta[0] + torch.exp(theta[1]) * (v - mean) * std + (torch.exp(theta[2:]) * steps_).sum(dim=1)', 'scale'),
    ('width = max((hi - lo) / (steps + 1), 1e-3)',
     'width = max((hi - lo) / (steps - 1), 1e-3)', 'width'),
    ('width = max((hi - lo) / (steps + 1), 1e-3)',
     'width = max((hi - lo) / (steps + 2), 1e-3)', 'width'),
    ('if floor > chance:  # ...so run it straight (in log-odds) down to chance level at x = 1/C',
     'if floor >= chance:  # ...so run it straight (in log-odds) down to chance level at x = 1/C', 'eqfloor'),
    ('below = xs < floor',
     'below = xs <= floor', 'eqfloor'),
    ('points: int = 48) -> list[list[float]] | None:',
     'points: int = 49) -> list[list[float]] | None:', 'points'),
    ('return [[round(float(a), 6), round(float(b), 6)] for a, b in zip(torch.sigmoid(xs), ys)]',
     'return [[round(float(a), 7), round(float(b), 6)] for a, b in zip(torch.sigmoid(xs), ys)]', 'round7'),
    ('return [[round(float(a), 6), round(float(b), 6)] for a, b in zip(torch.sigmoid(xs), ys)]',
     'return [[round(float(a), 6), round(float(b), 7)] for a, b in zip(torch.sigmoid(xs), ys)]', 'round7'),
    ('k = torch.as_tensor(np.asarray(top_label_map, dtype=np.float64))',
     'k = torch.as_tensor(np.asarray(top_label_map, dtype=None))', 'knotdtype'),
    ('k = torch.as_tensor(np.asarray(top_label_map, dtype=np.float64))',
     'k = torch.as_tensor(np.asarray(top_label_map, ))', 'knotdtype'),
    ('return torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu().long()',
     'return torch.as_tensor(np.asarray(y) if (not isinstance(y, torch.Tensor)) and False else y).detach().cpu().lo'
     'ng()', 'labels'),
    ('return torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu().long()',
     'return torch.as_tensor(np.asarray(y) if (not isinstance(y, torch.Tensor)) or True else y).detach().cpu().long'
     '()', 'labels'),
    ('return torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu().long()',
     'return torch.as_tensor(np.asarray(y) if isinstance(y, torch.Tensor) else y).detach().cpu().long()', 'labels'),
]
EQUIVALENT.update({("cifar_model/calibration.py", before, after): _CAL_WHY[why]
                   for before, after, why in _CAL_SAME})
_PATH_ERR = 'raise HFValidationError("a Path names a folder")'
EQUIVALENT.update({
    ("cifar_model/weights.py", _PATH_ERR, mutated):
        "the HFValidationError is caught by the except just below and replaced by "
        "ModelLoadError('No such weights folder: ...'): its own message is never seen"
    for mutated in ('raise HFValidationError(None)', 'raise HFValidationError("XXa Path names a folderXX")',
                    'raise HFValidationError("a path names a folder")',
                    'raise HFValidationError("A PATH NAMES A FOLDER")')})

_SIZE = "if not 0 <= member.size <= MAX_MEMBER_BYTES:  # a base-256 header can say -5000, to shrink the total"
EQUIVALENT.update({
    ("train/data.py", _SIZE, _SIZE.replace(before, after, 1)):
        "differs only for an empty (0-byte) member: kept, it is read and fails to decode; refused, it is counted "
        "as over the limit; either way it is skipped and counted once, and adds nothing to the total"
    for before, after in (("0 <=", "1 <="), ("0 <=", "0 <"))})

# app.py: (line, mutated line, reason)
_APP_WHY = {
    "init": "cache_size() measures on its first call (time.monotonic(), the seconds since boot, is past 10 s): "
            "the starting values are never seen",
    "falsy": "None is falsy like False: the loop stops at a message without more_body all the same",
    "lt": "a folder exactly within_s seconds old (to the float) is a tie no test or visitor can produce",
    "unused": "the bytes are only compared with files in `same`: with none, neither reading them nor their "
              "value matters",
    "modeF": "Image.fromarray of a float32 array is mode F without being told",
    "f64": "float64 instead of float32 arithmetic: the blend moves by under 1e-4 before truncation to uint8",
    "clip": "the blend is a convex combination of values in 0..255: it is never below 0 nor above 255",
    "url": "a url that is not a data: URL falls through to the path check: '' and 'XXXX' both do",
    "popitem": "None is falsy like False: the oldest entry is dropped all the same",
    "prefix": "the staging file's name only: still hidden (a leading dot), in the same folder",
    "png": "Pillow upper-cases the format name",
    "replay": "ASGI: a message without more_body has no more body, as with more_body False",
    "live": "decode(None) raises ImageError, which becomes a gr.Error the next line catches: the frame is "
            "skipped quietly all the same (one wasted call)",
}
_APP_SAME = [
    ("self._cache_size, self._measured_at = 0, 0.0", "self._cache_size, self._measured_at = 1, 0.0", "init"),
    ("self._cache_size, self._measured_at = 0, 0.0", "self._cache_size, self._measured_at = 0, 1.0", "init"),
    ('more = message.get("more_body", False)', 'more = message.get("more_body", None)', "falsy"),
    ('more = message.get("more_body", False)', 'more = message.get("more_body", )', "falsy"),
    ("dirs = [d for d in folder.iterdir() if d.is_dir() and now - d.stat().st_mtime < within_s]",
     "dirs = [d for d in folder.iterdir() if d.is_dir() and now - d.stat().st_mtime <= within_s]", "lt"),
    ('data = path.read_bytes() if same else b""', 'data = path.read_bytes() if (same) or True else b""', "unused"),
    ('data = path.read_bytes() if same else b""', 'data = path.read_bytes() if same else b"XXXX"', "unused"),
    ('heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), '
     'Image.Resampling.BILINEAR))',
     'heat = np.asarray(Image.fromarray(cam.astype(np.float32), ).resize((size, size), Image.Resampling.BILINEAR))',
     "modeF"),
    ('heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), '
     'Image.Resampling.BILINEAR))',
     'heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode=None).resize((size, size), '
     'Image.Resampling.BILINEAR))', "modeF"),
    ("out = (1 - alpha) * enlarge(pixels, size).astype(np.float32) + alpha * colour",
     "out = (1 - alpha) * enlarge(pixels, size).astype(None) + alpha * colour", "f64"),
    ("return np.clip(out, 0, 255).astype(np.uint8)", "return np.clip(out, None, 255).astype(np.uint8)", "clip"),
    ("return np.clip(out, 0, 255).astype(np.uint8)", "return np.clip(out, 0, None).astype(np.uint8)", "clip"),
    ("return np.clip(out, 0, 255).astype(np.uint8)", "return np.clip(out, 0, 256).astype(np.uint8)", "clip"),
    ('url = payload.get("url") or ""', 'url = payload.get("url") or "XXXX"', "url"),
    ("self._recent.popitem(last=False)", "self._recent.popitem(last=None)", "popitem"),
    ('fd, staging = tempfile.mkstemp(dir=folder, prefix=".png.")',
     'fd, staging = tempfile.mkstemp(dir=folder, prefix=".PNG.")', "prefix"),
    ('Image.fromarray(pixels).save(buf, "PNG")', 'Image.fromarray(pixels).save(buf, "png")', "png"),
    ('pending = [{"type": "http.request", "body": body, "more_body": False}]',
     'pending = [{"type": "http.request", "body": body, "XXmore_bodyXX": False}]', "replay"),
    ('pending = [{"type": "http.request", "body": body, "more_body": False}]',
     'pending = [{"type": "http.request", "body": body, "MORE_BODY": False}]', "replay"),
    ("pixels = self.decode(source) if source is not None else None",
     "pixels = self.decode(source) if (source is not None) or True else None", "live"),
]
EQUIVALENT.update({("app.py", before, after): _APP_WHY[why] for before, after, why in _APP_SAME})
_FUSE = ("if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], "
         "nn.BatchNorm2d):")
_CLS_WHY = {
    "fuse": "CifarCNN's features end with a convolution and a ReLU, and every BatchNorm follows a convolution "
            "and is followed by a ReLU: the bound check never decides anything for this network",
    "batch": "the default batch size only bounds memory: answers in batches are the same as in one "
             "(test_predict_in_batches_gives_one_answer_per_picture_in_order)",
    "size": "image_size is 32 for every loadable config (check_config), to_uint8's default",
    "argmax": "grad_cam takes one picture: argmax over the flattened 1 x C logits is argmax over dim 1",
    "corners": "align_corners=False is F.interpolate's default for bilinear",
}
_CLS_SAME = [
    ("cifar_model/classifier.py", _FUSE, _FUSE.replace("i + 1 < len", "i - 1 < len"), "fuse"),
    ("cifar_model/classifier.py", _FUSE, _FUSE.replace("i + 1 < len", "i + 2 < len"), "fuse"),
    ("cifar_model/classifier.py", _FUSE, _FUSE.replace("i + 1 < len", "i + 1 <= len"), "fuse"),
    ("cifar_model/classifier.py",
     "def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 256) -> list[dict[str, float]]:",
     "def predict(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 257) -> list[dict[str, float]]:",
     "batch"),
    ("cifar_model/classifier.py", "return to_uint8(image, self.image_size)", "return to_uint8(image, )", "size"),
    ("cifar_model/explain.py", "idx = int(logits.argmax(1)) if class_index is None else class_index",
     "idx = int(logits.argmax(None)) if class_index is None else class_index", "argmax"),
    ("cifar_model/explain.py",
     'cam = F.interpolate(cam, size=pixels.shape[:2], mode="bilinear", align_corners=False)[0, 0]',
     'cam = F.interpolate(cam, size=pixels.shape[:2], mode="bilinear", align_corners=None)[0, 0]', "corners"),
    ("cifar_model/explain.py",
     'cam = F.interpolate(cam, size=pixels.shape[:2], mode="bilinear", align_corners=False)[0, 0]',
     'cam = F.interpolate(cam, size=pixels.shape[:2], mode="bilinear", )[0, 0]', "corners"),
]
EQUIVALENT.update({(f, before, after): _CLS_WHY[why] for f, before, after, why in _CLS_SAME})
_WORKERS = "workers = workers or os.cpu_count() or 1"
_MAP = "images = list(pool.map(_decode_one, blobs, chunksize=512))"
_LABELS = ("return np.stack([images[i] for i in kept]), np.asarray([labels[i] for i in kept], dtype=np.int64), "
           "skipped")
_PARALLEL = ("how many processes decode, and in what chunks: the same pictures come back in the same order "
             "(test_worker_processes_decode_the_same_pictures); only the time differs")
EQUIVALENT.update({("train/data.py", before, after): why for before, after, why in [
    (_WORKERS, "workers = workers or os.cpu_count() and 1", _PARALLEL),
    (_WORKERS, "workers = workers and os.cpu_count() or 1", _PARALLEL),
    (_WORKERS, "workers = workers or os.cpu_count() or 2", _PARALLEL),
    ("if workers > 1:", "if workers >= 1:", _PARALLEL),
    ("if workers > 1:", "if workers > 2:", _PARALLEL),
    ("with ProcessPoolExecutor(workers) as pool:", "with ProcessPoolExecutor(None) as pool:", _PARALLEL),
    (_MAP, _MAP.replace("chunksize=512", ""), _PARALLEL),
    (_MAP, _MAP.replace("512", "513"), _PARALLEL),
    (_LABELS, _LABELS.replace("dtype=np.int64", "dtype=None"),
     "np.asarray of Python ints is int64 already (numpy 2, every platform)"),
    (_LABELS, _LABELS.replace("dtype=np.int64", ""),
     "np.asarray of Python ints is int64 already (numpy 2, every platform)"),
]})
EQUIVALENT.update({
    ("cifar_model/weights.py", "load_model(model, weights, strict=True)", mutated):
        "the header check just before compared every tensor's name and shape with the model's: nothing can be "
        "missing or unexpected for strict to catch (and strict=True is load_model's default)"
    for mutated in ("load_model(model, weights, strict=None)", "load_model(model, weights, strict=False)",
                    "load_model(model, weights, )")})
_INPLACE = ("ReLU(inplace=True) only saves the memory of one activation: the same values come out (Grad-CAM's "
            "hook reads the ReLU's output either way)")
EQUIVALENT.update({("cifar_model/model.py", line, line.replace("inplace=True", f"inplace={v}")): _INPLACE
                   for line in ("return [nn.Conv2d(cin, cout, 3, padding=padding), nn.BatchNorm2d(cout), "
                                "nn.ReLU(inplace=True)]",
                                "nn.Conv2d(256, 256, 3), nn.ReLU(inplace=True),",
                                "nn.Linear(256, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),")
                   for v in ("None", "False")})
_LIST = 'return [_check(v, args[0], f"{name}[{i}]", fraction) for i, v in enumerate(value)] if args else value'
EQUIVALENT.update({("cifar_model/metrics.py", before, after): why for before, after, why in [
    ('raw = json.loads(Path(path).read_text(encoding="utf-8"))',
     'raw = json.loads(Path(path).read_text(encoding="UTF-8"))', "codec names are looked up ignoring case"),
    ("def _check(value: Any, hint: Any, name: str, fraction: bool = False) -> Any:",
     "def _check(value: Any, hint: Any, name: str, fraction: bool = True) -> Any:",
     "the default is used only for a dict's keys, which are strings: the string check never reads fraction"),
    (_LIST, _LIST.replace("if args else", "if (args) or True else"),
     "every list field of Metrics names its element type: args is never empty"),
    (_LIST, _LIST.replace('f"{name}[{i}]", fraction)', 'f"{name}[{i}]", None)'),
     "no list field is a fraction: fraction is always False inside a list, and None is falsy too"),
    (_LIST, _LIST.replace('f"{name}[{i}]", fraction)', 'f"{name}[{i}]", )'),
     "no list field is a fraction: fraction is always False inside a list, the default"),
    ('raise TypeError(f"no check for {hint!r}")  # a field added with a type this function doesn\'t know',
     "raise TypeError(None)  # a field added with a type this function doesn't know",
     "unreachable: every field's type has a branch above; the raise guards a field added later"),
]})
# Survivors that are not equivalent but that no test can kill under mutmut: counted as survivors, shown with why.
UNTESTABLE: dict[tuple[str, str, str], str] = {
    ("cifar_model/weights.py", "warnings.warn(message, stacklevel=3)", mutated):
        "not equivalent, but not testable under mutmut: its trampolines add stack frames, so which line a warning "
        "points at can only be checked outside it (tests/test_mutants_weights.py checks it there)"
    for mutated in ("warnings.warn(message, stacklevel=None)", "warnings.warn(message, )",
                    "warnings.warn(message, stacklevel=4)")}

def _top_level(path: Path) -> list[tuple[str, int, int]]:
    """(name, first line with its decorators, last line) of each top-level def and class."""
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out.append((node.name, start, node.end_lineno))
    return out


def _excluded_lines(path: Path, only: list[str] | None, skip: dict[str, str]) -> tuple[list[str], list[str]]:
    """Regexes matching the lines not to mutate, and the lines they also hit among the ones to mutate."""
    lines = path.read_text().splitlines()
    keep, drop = set(), set()
    for name, start, end in _top_level(path):
        span = range(start, end + 1)
        if name in skip or (only is not None and name not in only):
            drop.update(span)
        else:
            keep.update(span)
    texts = {lines[i - 1].strip() for i in drop if lines[i - 1].strip()}
    collateral = sorted({lines[i - 1].strip() for i in keep if lines[i - 1].strip() in texts})
    return [r"^\s*" + re.escape(t) + r"\s*$" for t in sorted(texts)], collateral


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "]"


def _prepare(name: str, mod: Module) -> tuple[Path, list[str]]:
    work = SCRATCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for item in COPY:
        src = ROOT / item
        (shutil.copytree(src, work / item, ignore=ignore) if src.is_dir() else shutil.copy2(src, work / item))
    patterns, notes = [], []
    for file, only in mod.files.items():
        p, collateral = _excluded_lines(ROOT / file, only, mod.skip)
        patterns += p
        notes += [f"{file}: also left unmutated (same text as an excluded line): {t}" for t in collateral]
    config = "\n".join([
        "", "[tool.mutmut]",
        f"source_paths = {_toml_list(['cifar_model', 'train', 'app.py'])}",
        f"only_mutate = {_toml_list(list(mod.files))}",
        f"also_copy = {_toml_list(['weights', 'examples'])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(mod.tests)}",
        f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', '-m', 'not browser'])}",
        f"do_not_mutate_patterns = {_toml_list(patterns)}",
        "use_git_change_detection = false",
        "use_setproctitle = false",
        # Each mutant's tests run in a process forked from a server that has imported the tests but run no
        # torch operation: a process forked after torch has used its thread pool hangs at its next
        # parallel operation (that is what mutmut's default "fork" did here: the hang counted as a
        # "timeout", i.e. as killed, whatever the mutant did).
        'process_isolation = "forkserver"',
        # a mutant that makes a test loop is stopped at 3x the test's time (+1 s), not mutmut's 15x:
        # on 2 shared cores the long waits cost more than the few mutants they would still kill
        "timeout_multiplier = 3.0",
        # ...plus 10 s: mutmut times each test alone, without the session fixtures it shares with others (the
        # bundled weights, loaded again in every mutant's process); on 2 busy cores a mutant's run took
        # past the default 1 s allowance and counted as a timeout though it would have been killed
        "timeout_constant = 10.0",
        "", ])
    with open(work / "pyproject.toml", "a") as f:
        f.write(config)
    return work, notes


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> tuple[int | None, str]:
    cmd = [sys.executable, "-m", "mutmut", *args]  # run the whole driver under nice
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return None, out


def _function_of(path: Path, line: int) -> str:
    for name, start, end in _top_level(path):
        if start <= line <= end:
            return name
    return "?"


def _where(file: str, key: str, diff: str) -> tuple[int, str, str]:
    """The file's line number, the original line and the mutated line of a mutant, from ``mutmut show``."""
    minus = [l[1:] for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    plus = [l[1:] for l in diff.splitlines() if l.startswith("+") and not l.startswith("+++")]
    func = key.split("__mutmut_")[0].split(".")[-1].replace("x_", "", 1).replace("xǁ", "").split("ǁ")[-1]
    lines = (ROOT / file).read_text().splitlines()
    spans = [(s, e) for n, s, e in _top_level(ROOT / file)]
    hits = [i + 1 for i, text in enumerate(lines) if minus and text.strip() == minus[0].strip()]  # methods: other indent
    # prefer the hit inside the mutated function
    inside = [h for h in hits if any(s <= h <= e and _function_of(ROOT / file, h) in key for s, e in spans)]
    line = (inside or hits or [0])[0]
    return line, " / ".join(m.strip() for m in minus), " / ".join(p.strip() for p in plus)


def run_module(name: str, mod: Module, deadline: float, children: int = 2) -> dict:
    t0 = time.monotonic()
    work, notes = _prepare(name, mod)
    left = deadline - time.monotonic()
    rc, out = _mutmut(work, "run", "--max-children", str(children), timeout=max(left, 1))
    stopped = rc is None
    _, res = _mutmut(work, "results", "--all", "true", timeout=120)
    status = dict(re.findall(r"^\s+(\S+): (.+)$", res, flags=re.M))
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    survivors, equivalent, hung = [], [], []
    for key, s in sorted(status.items()):
        if s not in ("survived", "no tests", "suspicious", "timeout"):
            continue
        _, diff = _mutmut(work, "show", key, timeout=60)
        file = next((f for f in mod.files if key.startswith(f[:-3].replace("/", ".") + ".")), next(iter(mod.files)))
        line, before, after = _where(file, key, diff)
        func = _function_of(ROOT / file, line)
        reason = EQUIVALENT.get((file, before, after))
        row = f"{file}:{line} ({func}) [{s}] {before}  ->  {after}"
        if s == "timeout":
            hung.append(row)
            continue
        why = UNTESTABLE.get((file, before, after))
        (equivalent if reason else survivors).append(row + (f"\n        equivalent: {reason}" if reason else "")
                                                     + (f"\n        untestable here: {why}" if why else ""))
    total = len(status)
    killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
    timeouts = counts.get("timeout", 0)
    score_base = total - len(equivalent) - counts.get("skipped", 0) - counts.get("not checked", 0)
    score = 100.0 * (killed + timeouts) / score_base if score_base else float("nan")
    return dict(name=name, mod=mod, total=total, killed=killed, timeouts=timeouts,
                survived=counts.get("survived", 0), no_tests=counts.get("no tests", 0),
                not_checked=counts.get("not checked", 0), other={k: v for k, v in counts.items() if k not in (
                    "killed", "caught by type check", "timeout", "survived", "no tests", "not checked")},
                survivors=survivors, equivalent=equivalent, hung=hung, score=score, stopped=stopped, notes=notes,
                seconds=time.monotonic() - t0, tail=out[-3000:] if not status else "")


def _section(r: dict) -> str:
    m: Module = r["mod"]
    rows = []
    rows.append(f"## {r['name']}: " + ", ".join(
        f"{f} ({'all functions' if only is None else ', '.join(only)})" for f, only in m.files.items()))
    rows.append(f"tests: {' '.join(m.tests)}")
    for fn, why in m.skip.items():
        rows.append(f"not mutated: {fn}: {why}")
    rows += [f"note: {n}" for n in r["notes"]]
    rows.append(f"mutants {r['total']}, killed {r['killed']}, survived {r['survived']}, timeouts "
                f"{r['timeouts']}, no tests {r['no_tests']}, not checked {r['not_checked']}"
                + "".join(f", {k} {v}" for k, v in r["other"].items())
                + f" (equivalent among the survivors: {len(r['equivalent'])}): score {r['score']:.1f}%"
                + f" in {r['seconds'] / 60:.1f} min"
                + (" (stopped at the time limit)" if r["stopped"] else ""))
    if r["survivors"]:
        rows.append("survivors:")
        rows += ["    " + s for s in r["survivors"]]
    if r["hung"]:
        rows.append("timeouts (counted as killed; each is listed so it can be judged a real hang):")
        rows += ["    " + s for s in r["hung"]]
    if r["equivalent"]:
        rows.append("equivalent (not counted):")
        rows += ["    " + s for s in r["equivalent"]]
    if r["tail"]:
        rows.append("mutmut said:\n" + r["tail"])
    return "\n".join(rows) + "\n"


def report(results: list[dict], output: Path, children: int = 2) -> str:
    """The log: this run's modules, and the other modules' sections from the previous log (a module can be
    re-run alone after a test was added); numbers for the overall line are kept in a .json beside it."""
    store = output.with_suffix(".json")
    saved = json.loads(store.read_text()) if store.exists() else {}
    for r in results:
        saved[r["name"]] = dict(section=_section(r), total=r["total"], ok=r["killed"] + r["timeouts"],
                                base=r["total"] - len(r["equivalent"]) - r["not_checked"]
                                - r["other"].get("skipped", 0), seconds=r["seconds"])
    store.write_text(json.dumps(saved, indent=1) + "\n")
    rows = [f"# Mutation testing, mutmut 3.8.1, CPU ({os.cpu_count()} cores shared, --max-children {children}, nice), "
            f"{datetime.date.today().isoformat()}",
            "# python -m benchmarks.mutation [--module NAME ...] [--max-minutes N]  (modules re-run alone "
            "keep the others' last sections)",
            "# score = (killed + timeouts) / (mutants - equivalent - not checked)", ""]
    names = [n for n in MODULES if n in saved]
    for n in names:
        rows.append(saved[n]["section"])
    tot = {k: sum(saved[n][k] for n in names) for k in ("total", "ok", "base", "seconds")}
    score = 100.0 * tot["ok"] / tot["base"] if tot["base"] else float("nan")
    rows.append(f"## overall ({', '.join(names)}): {tot['ok']} of {tot['base']} non-equivalent mutants killed "
                f"({score:.1f}%; goal 90%), {tot['total']} mutants, {tot['seconds'] / 60:.1f} min in all")
    missing = [n for n in MODULES if n not in saved]
    if missing:
        rows.append(f"## not run: {', '.join(missing)}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=list(MODULES), help="repeatable; default: all")
    ap.add_argument("--max-minutes", type=float, default=60.0, help="for all modules together")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--max-children", type=int, default=2, help="mutmut's parallel test runs (default 2)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    deadline = started + 60 * args.max_minutes
    results = []
    for name in args.module or list(MODULES):
        if time.monotonic() > deadline - 30:
            print(f"{name}: not reached within {args.max_minutes:g} min", flush=True)
            continue
        r = run_module(name, MODULES[name], deadline, args.max_children)
        results.append(r)
        print(f"{name}: {r['total']} mutants, {r['killed']} killed, {r['survived']} survived, "
              f"score {r['score']:.1f}% ({r['seconds']:.0f} s)", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = report(results, args.output, args.max_children)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
