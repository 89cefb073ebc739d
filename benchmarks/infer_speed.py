"""CPU inference: ``Classifier.predict`` on one photo-size upload against a plain reference, same run.

    python -m benchmarks.infer_speed [--repeats 200]

The reference is what a first demo would do: ``Image.open(...).convert("RGB")``, a full decode,
centre crop and resize with PIL, and the same network in plain eager fp32 (unfused BatchNorm,
weights in NCHW), through the one inference rule :func:`cifar_model.tta_logits` (normalise, flip
test-time augmentation as a batch of two), so both sides compute the same answer by the same rule
and differ only in decoding and in the network's form (``Classifier``: BatchNorm folded, channels-last;
fp32 by default, bf16 on request). A reference without TTA is timed too. Medians of interleaved runs;
prints the ratio ours / reference (target <= 0.6) and the test-sample accuracy of both paths.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cifar_model import Classifier, Rule

ROOT = Path(__file__).resolve().parent.parent


def photo(width: int, height: int) -> bytes:
    """A photo-like JPEG (smooth gradients plus noise, quality 90), generated so the run is repeatable."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, 1 - xx / width], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Reference:
    """Plain eager fp32: full PIL decode, crop/resize, the unfused network through the same ``Rule``
    (or, with ``tta=False``, one forward pass and a plain softmax)."""

    def __init__(self, clf: Classifier, tta: bool) -> None:
        self.model = clf.weights.model.float().eval()  # as loaded: BatchNorm unfused, NCHW weights
        self.rule, self.classes, self.tta = Rule(self.model, clf.weights.config), clf.classes, tta

    @torch.inference_mode()
    def __call__(self, data: bytes) -> dict[str, float]:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((32, 32), Image.BICUBIC)
        pixels = torch.from_numpy(np.array(img)).unsqueeze(0)  # 1 x 32 x 32 x 3 uint8
        if self.tta:
            probs = self.rule(pixels)[0]
        else:
            x = (pixels.permute(0, 3, 1, 2).float() / 255 - torch.tensor(self.rule.mean).view(1, 3, 1, 1))
            probs = torch.softmax(self.model(x / torch.tensor(self.rule.std).view(1, 3, 1, 1)), dim=1)
        return dict(zip(self.classes, probs[0].tolist()))


def timed(fn, data: bytes) -> float:
    t0 = time.perf_counter()
    fn(data)
    return time.perf_counter() - t0


def sample_accuracy(fn) -> float:
    files = sorted((ROOT / "tests/data/cifar10-test-sample").glob("*/*.jpg"))
    hits = 0
    for f in files:
        probs = fn(f.read_bytes())
        hits += max(probs, key=probs.get) == f.parent.name
    return hits / len(files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--sizes", nargs="+", default=["640x480", "4032x3024"], help="upload sizes WxH")
    args = p.parse_args()
    clf = Classifier.from_pretrained()
    bf16 = Classifier.from_pretrained(precision="bf16")
    candidates = {"ours (Classifier.predict)": lambda data: clf.predict(data).probabilities,
                  "ours, precision='bf16'": lambda data: bf16.predict(data).probabilities,
                  "reference, flip TTA": Reference(clf, True), "reference, no TTA": Reference(clf, False)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | Classifier: {clf.dtype}, BatchNorm folded,"
          " channels-last")
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        data = photo(w, h)
        for fn in candidates.values():  # warm-up
            for _ in range(5):
                fn(data)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
            for name, fn in candidates.items():
                times[name].append(timed(fn, data))
        med = {name: statistics.median(t) * 1000 for name, t in times.items()}
        ref = med["reference, flip TTA"]
        print(f"\n{size} JPEG ({len(data) / 1024:.0f} KiB), median of {args.repeats}:")
        for name, ms in med.items():
            print(f"  {name:<28} {ms:7.2f} ms   ratio to reference (flip TTA): {ms / ref:.2f}x")
    print("\naccuracy on the 500-picture committed test sample:")
    for name in ("ours (Classifier.predict)", "ours, precision='bf16'", "reference, flip TTA"):
        print(f"  {name:<28} {sample_accuracy(candidates[name]):.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
