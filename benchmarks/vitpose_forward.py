"""Forward throughput of poseforge ViTPose against Hugging Face transformers' VitPose at 256x192, measured in
the same run on the same device, dtype and weights: the table of ``poseforge bench --vitpose``
(``poseforge/cli/bench.py``), with this machine, its load and the date printed first for the record.

What is timed (each arm interleaved with the others, median img/s over the repeats; ratios against HF eager):

* HF ``VitPoseForPoseEstimation`` (random weights, its default attention) as built, and ``torch.compile``-d;
* poseforge holding the same weights (converted from the HF model; outputs checked to agree first) through
  ``optimize_for_inference``: pure bf16 on CUDA (fp32 on CPU), folded BatchNorms, channels-last; eager, and
  compiled with ``fullgraph=True`` (+ a CUDA graph of the batch size on CUDA);
* with ``--fp8`` (CUDA, compute capability >= 8.9, torchao): FP8 matmuls, and their output error against fp32.

    PYTHONPATH=. python benchmarks/vitpose_forward.py                      # CPU: ViTPose-S/B, batch 8
    PYTHONPATH=. python benchmarks/vitpose_forward.py --sizes s,b,l,h --batch-size 256 --fp8 --json vitpose.json

Every ``poseforge bench --vitpose`` option is accepted (``--device``, ``--dtype``, ``--repeats``,
``--no-compile``, ``--no-cuda-graphs``, ``--compile-mode``, ``--threads``).
"""
from __future__ import annotations

import datetime
import sys

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)


def main(argv: list[str]) -> int:
    from poseforge.cli import main as poseforge_main

    print(f"vitpose_forward benchmark, {datetime.date.today()}, {cpu_name()}, {load_average()}")
    return poseforge_main(["bench", "--vitpose", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
