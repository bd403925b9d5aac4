"""``poseforge convert SRC DST_DIR``: official / mmpose / Hugging Face ViTPose checkpoint -> poseforge folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import PoseforgeError
from .common import size_argument

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint file (.pth/.pt/.bin/.safetensors) or Hugging Face folder")
    parser.add_argument("output", help="folder to write model.safetensors + config.json into")
    parser.add_argument("--format", default="auto", choices=["auto", "official", "mmpose", "hf", "poseforge"],
                        help="checkpoint layout (default: guessed from the key names)")
    parser.add_argument("--keypoint-set", default=None, help="keypoint set name (default: guessed from the keypoint count)")
    parser.add_argument("--tasks", default=None, metavar="NAME[:SET],...",
                        help="ViTPose++ checkpoints: task names in dataset-index order, e.g. coco:coco17,aic:aic14 "
                             "(default: the official six with six experts)")
    parser.add_argument("--input-size", type=size_argument, default=None, metavar="WxH",
                        help="crop size the checkpoint was trained at (default: from the position embeddings)")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads (default: the official value for the width)")
    parser.add_argument("--codec", default="udp", help="codec of the converted model (default: udp)")
    parser.add_argument("--sigma", type=float, default=2.0, help="codec Gaussian sigma (default: 2)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing model in OUTPUT")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint
    from ..models.estimators import CONFIG_NAME, WEIGHTS_NAME

    output = Path(args.output)
    if (output / WEIGHTS_NAME).exists() and not args.force:
        raise PoseforgeError(f"{output}: already holds a model (use --force to overwrite)")
    model = convert_checkpoint(args.source, format=args.format, keypoint_set=args.keypoint_set,
                               input_size=args.input_size, num_heads=args.num_heads, codec=args.codec, sigma=args.sigma,
                               tasks=args.tasks.split(",") if args.tasks else None)
    model.save_pretrained(output)
    cfg = model.config
    w, h = cfg.input_size
    print(f"{args.source} -> {output / WEIGHTS_NAME}, {output / CONFIG_NAME}")
    if hasattr(cfg, "tasks"):
        sets = ", ".join(f"{t.name} ({t.keypoint_set})" for t in cfg.tasks)
        outputs = f"{cfg.backbone.num_experts} experts x {cfg.backbone.expert_width} channels; tasks {sets}"
    else:
        outputs = f"{cfg.keypoint_set} ({model.keypoint_set.num_keypoints} keypoints)"
    print(f"  {cfg.name}: {cfg.backbone.embed_dim}-wide x {cfg.backbone.depth} blocks, {cfg.backbone.num_heads} heads, "
          f"{model.num_parameters() / 1e6:.1f}M parameters, input {w}x{h}, {outputs}, codec {cfg.codec.get('name')}")
    return 0
