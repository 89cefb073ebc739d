"""``python -m train.export WEIGHTS_DIR``: write the folder's inference rule as ``model.onnx``, for the browser.

The file is :class:`cifar_model.Rule` (normalisation, the network on each picture and its mirror image,
calibration, the unsure margin) exported whole with ``torch.onnx.export`` (dynamo), one self-contained
file. Its contract, stated on the model card and checked on load through ``onnx_sha256`` in config.json:

* input ``pixels``: uint8, N x 32 x 32 x 3, RGB, 0-255, the picture's centre square already reduced to
  32 x 32 as ``cifar_model.to_uint8`` does (NHWC, not normalised: normalisation is inside);
* outputs ``probabilities`` (float32, N x C, calibrated, classes in config.json's order) and ``unsure``
  (float32, N: the unsure margin; > 0 means the rule fires).

``python -m train`` calls :func:`export` itself; this command is for a folder written without it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import torch

from cifar_model import Rule, load
from cifar_model.weights import CONFIG_FILE, ONNX_FILE, write_record

OPSET = 18


def export(rule: Rule, path: Path) -> str:
    """Write ``rule`` (fp32, eval) to ``path`` as one .onnx file with a dynamic batch; return its sha256."""
    example = (torch.zeros(2, 32, 32, 3, dtype=torch.uint8),)
    batch = {"pixels": {0: torch.export.Dim("batch", min=1, max=1024)}}
    program = torch.onnx.export(rule.eval(), example, input_names=["pixels"], output_names=["probabilities", "unsure"],
                                dynamic_shapes=batch, opset_version=OPSET, dynamo=True, external_data=False,
                                optimize=True, verbose=False)
    program.save(str(path), external_data=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_folder(folder: str | Path) -> str:
    """Export the rule of the weights in ``folder`` to ``folder/model.onnx`` and record its sha256 in
    config.json; return the sha256."""
    folder = Path(folder)
    weights = load(folder)
    sha = export(Rule(weights.model, weights.config), folder / ONNX_FILE)
    write_record(replace(weights.config, onnx_sha256=sha), folder / CONFIG_FILE)
    return sha


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a weights folder (config.json, model.safetensors)")
    args = p.parse_args(argv)
    sha = export_folder(args.folder)
    print(f"wrote {args.folder / ONNX_FILE} (sha256 {sha}) and its sha256 into {args.folder / CONFIG_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
