"""``python -m cifar_model photo.jpg [...]``: print each picture's top classes, and say when the model is unsure."""

from __future__ import annotations

import argparse
import sys

from . import Classifier, ImageError, ModelLoadError


def main(argv: list[str] | None = None) -> int:
    # The options' help text is wording, not behaviour: not mutated.
    parser = argparse.ArgumentParser(prog="python -m cifar_model", description=__doc__)  # pragma: no mutate
    add = parser.add_argument
    add("images", nargs="+", help="picture files (JPEG, PNG, WebP, GIF, BMP, TIFF)")  # pragma: no mutate
    add("--model", default=None, help="weights folder or Hub repo id (default: bundled weights/)")  # pragma: no mutate
    add("--revision", default=None, help="Hub branch, tag or commit sha to pin")  # pragma: no mutate
    add("--top", type=int, default=3,
        help="how many classes to print per picture (default 3)")  # pragma: no mutate
    args = parser.parse_args(argv)
    try:
        clf = Classifier.from_pretrained(args.model, args.revision)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = False  # pragma: no mutate (only its truth is read)
    for path in args.images:
        try:
            answer = clf.predict(path)
        except ImageError as err:
            print(f"{path}: error: {err}", file=sys.stderr)
            failed = True
            continue
        top = sorted(answer.probabilities.items(), key=lambda kv: kv[1], reverse=True)[: max(1, args.top)]
        # wording: not mutated
        unsure = "unsure, probably none of the classes; closest: " if answer.unsure else ""  # pragma: no mutate
        print(f"{path}: {unsure}" + ", ".join(f"{name} {p:.1%}" for name, p in top))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
