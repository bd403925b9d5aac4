"""The ``poseforge`` command: every subcommand is a module of this package, imported on use.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it parses and prints,
and calls the library below it (this package is the top layer: nothing below imports it). Errors that poseforge
raises on purpose (:class:`PoseforgeError`) and missing files become one line and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn, Sequence

from ..errors import PoseforgeError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("poseforge.cli.demo", "run the whole pipeline on fresh synthetic people: detect, estimate, score, draw"),
    "eval": ("poseforge.cli.eval", "score COCO-format keypoint results against ground truth (OKS AP/AR)"),
    "convert": ("poseforge.cli.convert", "convert official / mmpose / Hugging Face checkpoints to poseforge models"),
    "synth": ("poseforge.cli.synth", "render a synthetic people dataset with exact labels (COCO format)"),
    "train": ("poseforge.cli.train", "train a model from a preset or YAML config (DDP/FSDP under torchrun)"),
    "pretrain": ("poseforge.cli.pretrain", "MAE pretraining of a ViT backbone (Sapiens) on images, no labels; draws reconstructions"),
    "predict": ("poseforge.cli.predict", "poses in your images, folders, videos or webcam (boxes from a detector)"),
    "pseudo-label": ("poseforge.cli.pseudo", "label a folder of unlabeled images with a teacher model (COCO keypoints, for self-training)"),
    "merge-experts": ("poseforge.cli.merge", "fold one task of a ViTPose++ model into a plain ViTPose (same outputs, same speed)"),
    "distill": ("poseforge.cli.distill", "train a small student from a trained teacher (output and/or knowledge-token distillation)"),
    "export": ("poseforge.cli.export", "export a model to ONNX (raw head outputs or decoded keypoints) for runtimes without PyTorch"),
    "bench": ("poseforge.cli.bench", "inference speed here: PyTorch vs onnxruntime fp32 / int8, and end-to-end video FPS"),
    "detect": ("poseforge.cli.detect", "person boxes in images as a COCO detection results file (for eval --boxes)"),
    "weights": ("poseforge.cli.weights", "list the named weights (official releases, shipped models) or --fetch them now"),
    "nas": ("poseforge.cli.nas", "once-for-all LitePose search: train a supernet, search it under a MACs / latency budget, export"),
}


# torch is an extra (see pyproject.toml): a command that needs it says so in one line.
_NEEDS_TORCH = ("poseforge {name}: error: this command needs PyTorch: pip install torch (the CPU or CUDA wheel, see "
                "pytorch.org) or 'poseforge[torch]'; exported ONNX models run without it: poseforge-rt")


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line (``poseforge eval: error: ...``) and exit code 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = OneLineErrorParser(prog="poseforge", description="Human pose estimation toolkit: train, evaluate, distil and serve.")
    parser.add_argument("--version", action="version", version=f"poseforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser = build_parser()
        parser.parse_args(argv[:1])  # --help, --version, or a one-line error for an unknown command
        parser.print_help()
        return 1
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        print(_NEEDS_TORCH.format(name=name), file=sys.stderr)
        return 2
    command_parser = OneLineErrorParser(prog=f"poseforge {name}", description=COMMANDS[name][1])
    command_parser.add_argument("-v", "--verbose", action="store_true", help="debug log output and full tracebacks on errors")
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    args.command_line = ["poseforge", *argv]  # as typed, for records such as an export's training.json
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(module.run(args) or 0)
    except (PoseforgeError, OSError) as e:
        if args.verbose:
            raise
        print(f"poseforge {name}: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))  # 130 for a training run stopped (and saved) by a signal
    except ModuleNotFoundError as e:
        if e.name != "torch" or args.verbose:
            raise
        print(_NEEDS_TORCH.format(name=name), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"poseforge {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
