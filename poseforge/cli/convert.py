"""``poseforge convert SRC DST_DIR``: ViTPose (official / mmpose / Hugging Face), ViTPose++, mmpose 1.x
RTMPose / DWPose / RTMW, official LitePose and Sapiens checkpoints -> a poseforge model folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import PoseforgeError
from .common import same_path, size_argument

log = logging.getLogger(__name__)

_FORMATS = ["auto", "official", "mmpose", "hf", "poseforge", "rtmpose", "litepose", "sapiens"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint file (.pth/.pt/.bin/.safetensors) or Hugging Face folder")
    parser.add_argument("output", help="folder to write model.safetensors + config.json into")
    parser.add_argument("--format", default="auto", choices=_FORMATS,
                        help="checkpoint layout (default: guessed from the key names; rtmpose covers RTMPose, DWPose "
                             "and RTMW; litepose the official mit-han-lab/litepose models; sapiens the "
                             "facebookresearch/sapiens pose, seg, depth, normal and pretraining checkpoints)")
    parser.add_argument("--keypoint-set", default=None,
                        help="keypoint set name (default: the checkpoint's keypoint names, else its keypoint count)")
    parser.add_argument("--input-size", type=size_argument, default=None, metavar="WxH",
                        help="crop size the checkpoint was trained at (default: from the checkpoint's config or its "
                             "tensor shapes)")
    parser.add_argument("--raw-weights", action="store_true",
                        help="convert the raw training weights of an mmengine EMA checkpoint (its ema_state_dict entry: "
                             "mmengine saves the averaged weights, the default, in state_dict)")
    parser.add_argument("--sigma", type=float, default=None,
                        help="codec Gaussian sigma (default: ViTPose 2; RTMPose the checkpoint's, else the official "
                             "one)")
    vitpose = parser.add_argument_group("ViTPose / ViTPose++")
    vitpose.add_argument("--tasks", default=None, metavar="NAME[:SET],...",
                         help="ViTPose++ checkpoints: task names in dataset-index order, e.g. coco:coco17,aic:aic14 "
                              "(default: the official six with six experts)")
    vitpose.add_argument("--num-heads", type=int, default=None,
                         help="attention heads (default: the official value for the width)")
    vitpose.add_argument("--codec", default=None, help="codec of the converted model (default: udp)")
    rtm = parser.add_argument_group("RTMPose / DWPose / RTMW")
    rtm.add_argument("--split-ratio", type=float, default=None,
                     help="SimCC bins per pixel (default: from the checkpoint's config or its tensor shapes)")
    rtm.add_argument("--distill-stage", type=int, choices=[1, 2], default=None,
                     help="DWPose distiller checkpoints: 1 takes the student, 2 the teacher's backbone with the "
                          "student's head (default: from the checkpoint's config, two_dis)")
    sapiens = parser.add_argument_group("Sapiens")
    sapiens.add_argument("--task", default=None, choices=["pose", "pose-coco", "pose-wholebody", "seg", "depth", "normal"],
                         help="the model to make of a pretraining (backbone-only) checkpoint, with a fresh head; "
                              "also tells a 3-class segmentation from normals (default: the checkpoint's head)")
    sapiens.add_argument("--patch-padding", type=int, default=None, metavar="P",
                         help="patch embedding padding (default: the official configs': 2 for pose and normal, 0 for "
                              "seg and depth)")
    parser.add_argument("--force", action="store_true",
                        help="write into an OUTPUT folder that already holds a model or other files (never into "
                             "SOURCE's folder)")


def describe_parts(config: Any) -> str:
    """One phrase for a model config's parts: ViT width / depth / heads or CSPNeXt factors, the neck, the head."""
    b = config.backbone
    if hasattr(b, "embed_dim"):
        text = f"{b.embed_dim}-wide x {b.depth} blocks, {b.num_heads} heads"
    elif getattr(b, "type", None) == "cspnext":
        text = f"CSPNeXt-{b.arch} (deepen {b.deepen_factor:g}, widen {b.widen_factor:g})"
    else:
        text = f"{getattr(b, 'type', type(b).__name__)} backbone"
    neck = getattr(config, "neck", None)
    if neck is not None:
        text += f" + {neck.type} neck"
    heads = getattr(config, "heads", None) or (config.head,)
    return text + f", {heads[0].type} head"


def _check_output(source: Path, output: Path, force: bool, written: tuple[str, ...]) -> None:
    """Refuse, before loading the checkpoint: writing over the source (a Hugging Face folder's config.json,
    a model.safetensors checkpoint; always refused), and without ``force`` an output folder that holds a
    model or any other file (a user's config.json is not ours to replace)."""
    if (source.is_dir() and same_path(output, source)) or any(same_path(output / name, source) for name in written):
        raise PoseforgeError(f"{output}: converting there would overwrite the checkpoint {source}; convert into "
                             "another folder (--force never overwrites the source)")
    if output.is_file():
        raise PoseforgeError(f"{output}: is a file; OUTPUT is the folder to write {' and '.join(written)} into")
    if force or not output.is_dir():
        return
    if (output / written[0]).exists():
        raise PoseforgeError(f"{output}: already holds a model; use --force to replace it or choose another folder")
    others = sorted(p.name for p in output.iterdir())
    if others:
        raise PoseforgeError(f"{output}: is not empty ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}); "
                             "convert into a new or empty folder, or use --force to write beside those files")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint
    from ..models.estimators import CONFIG_NAME, WEIGHTS_NAME

    output = Path(args.output)
    _check_output(Path(args.source), output, args.force, (WEIGHTS_NAME, CONFIG_NAME))
    model = convert_checkpoint(args.source, format=args.format, raw_weights=args.raw_weights, keypoint_set=args.keypoint_set,
                               input_size=args.input_size, num_heads=args.num_heads, codec=args.codec, sigma=args.sigma,
                               tasks=args.tasks.split(",") if args.tasks else None, split_ratio=args.split_ratio,
                               distill_stage=args.distill_stage, task=args.task, patch_padding=args.patch_padding)
    model.save_pretrained(output)
    cfg = model.config
    w, h = cfg.input_size
    print(f"{args.source} -> {output / WEIGHTS_NAME}, {output / CONFIG_NAME}")
    if hasattr(cfg, "tasks"):
        sets = ", ".join(f"{t.name} ({t.keypoint_set})" for t in cfg.tasks)
        outputs = f"{cfg.backbone.num_experts} experts x {cfg.backbone.expert_width} channels; tasks {sets}"
    elif getattr(model, "kind", None) == "dense":
        classes = int(cfg.codec.get("num_classes", 0))
        outputs = ", ".join(f"{t} ({classes} classes)" if t == "seg" else t for t in cfg.head.tasks)
    else:
        outputs = f"{cfg.keypoint_set} ({model.keypoint_set.num_keypoints} keypoints)"
    codec = cfg.codec.get("name")
    if codec == "simcc":
        codec += f" (split ratio {cfg.codec.get('split_ratio'):g})"
    print(f"  {cfg.name}: {describe_parts(cfg)}, {model.num_parameters() / 1e6:.1f}M parameters, input {w}x{h}, "
          f"{outputs}, codec {codec}")
    return 0
