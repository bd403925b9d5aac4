"""Train poseforge's built-in person detector (:mod:`poseforge.inference.detectors.builtin`) on synthetic people.

The pose :class:`~poseforge.train.engine.Trainer` is built around top-down crops and keypoint codecs,
so the detector has this small loop of its own (it reuses the optimizer and LR schedule):

1. render a pool of synthetic scenes (1-4 people, clutter) once into memory;
2. each step takes a batch from the pool and augments it on the device in one go: random scale
   (0.6-1.5x the letterbox fit), translation and horizontal flip as one affine warp per image
   (:func:`~poseforge.data.transforms.crop_batch`), brightness / contrast / saturation jitter, and with
   ``camera_sim`` the camera steps of :meth:`~poseforge.data.augment.AugmentConfig.camera_sim` (white
   balance, grayscale, Gaussian / motion blur, noise, JPEG) on the network-sized crops;
3. CenterNet targets and losses (:func:`~poseforge.inference.detectors.builtin.encode_targets`,
   :func:`~poseforge.inference.detectors.builtin.detector_loss`); AdamW, warm-up + cosine;
4. every ``val_interval`` epochs: COCO box AP on held-out scenes (another seed), best model kept.

The bundled weights were made with (the defaults; 43 minutes with one thread on a 2-core CPU shared
with other jobs; held-out box AP 0.456, AP50 0.788 on 200 scenes)::

    python -m poseforge.train.detector --out runs/detector --threads 1 --export poseforge/assets/detector

Run folder: ``metrics.jsonl`` (train and val records), ``best/`` and ``last/`` model folders, and
``last.pt``: the training state at the end of the latest epoch (model, optimizer, schedule, random
states, best so far), written atomically after the model folders. ``--resume`` continues a stopped run
from it exactly: the scene pools are re-rendered from their seeds and the run ends with the same weights
as an uninterrupted one.
``--photo-backgrounds P`` renders the training pool (not the held-out scenes) with real-photo backdrops and
textures on a share ``P`` of the images (docs/sim2real.md; needs ``poseforge[sim2real]``), and
``--camera-sim`` turns the camera steps on: issue 31's levers for real photos.
``--export DIR`` writes the best model there in fp16 (what ships in ``poseforge/assets/detector``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.augment import AugmentConfig, Photometric
from ..errors import PoseforgeError
from ..evaluation.boxes import evaluate_boxes
from ..io import write_bytes_atomic, write_json_atomic
from ..inference.detectors.base import Detections, xywh_to_xyxy
from ..inference.detectors.builtin import (BuiltinDetector, PersonDetectorConfig, PersonDetectorNet, detector_loss,
                                           encode_targets)
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .config import OptimSection, ScheduleSection
from .optim import LRSchedule, build_optimizer

__all__ = ["DetectorTrainConfig", "train_detector", "render_scenes", "evaluate_detector", "main"]

log = logging.getLogger("poseforge")


@dataclasses.dataclass
class DetectorTrainConfig:
    """Settings of :func:`train_detector` (defaults: the bundled detector's run)."""

    train_images: int = 6000
    val_images: int = 200
    seed: int = 0
    val_seed: int = 2_000_003
    render_size: tuple[int, int] = (320, 240)
    people: tuple[int, int] = (1, 4)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_iters: int = 100
    scale_range: tuple[float, float] = (0.6, 1.5)
    val_interval: int = 2
    photo_backgrounds: float = 0.0
    photo_clothing: float = 0.0
    camera_sim: bool = False
    threads: int = 2
    model: PersonDetectorConfig = dataclasses.field(default_factory=PersonDetectorConfig)


# ---------------------------------------------------------------------------------------------- data
def render_scenes(num_images: int, seed: int, size: tuple[int, int], people: tuple[int, int],
                  progress: bool = False, photo_backgrounds: float = 0.0, photo_clothing: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render synthetic scenes: ``images [N, 3, H, W]`` uint8, ``boxes [N, P, 4]`` xyxy, ``valid [N, P]``,
    ``areas [N, P]`` (visible pixels); ``photo_backgrounds``: the share of images with photo backdrops /
    textures, ``photo_clothing``: of garments with photo prints (the labels are those of the same seed without
    photos)."""
    from ..data.synth import SyntheticPoseDataset

    dataset = SyntheticPoseDataset(num_images, seed=seed, image_size=size, people=people,
                                   photo_backgrounds=photo_backgrounds, photo_clothing=photo_clothing)
    images, boxes, valid, areas = [], [], [], []
    start = time.time()
    for s in range(0, num_images, dataset.batch_size):
        batch = dataset.render_tensors(list(range(s, min(num_images, s + dataset.batch_size))))
        images.append(batch.image.permute(0, 3, 1, 2).contiguous())
        boxes.append(xywh_to_xyxy(batch.bbox.float()))
        valid.append(batch.present.bool())
        areas.append(batch.area.float())
        if progress and (s // dataset.batch_size) % 10 == 0:
            log.info(f"rendered {s + len(batch.indices)}/{num_images} scenes ({time.time() - start:.0f}s)")
    width = max(b.shape[1] for b in boxes)
    pad = lambda t, value: torch.nn.functional.pad(t, [0, 0] * (t.ndim - 2) + [0, width - t.shape[1]], value=value)  # noqa: E731
    return (torch.cat(images), torch.cat([pad(b, 0.0) for b in boxes]), torch.cat([pad(v, False) for v in valid]),
            torch.cat([pad(a, 0.0) for a in areas]))


def augment(images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, model: PersonDetectorNet,
            scale_range: tuple[float, float], generator: torch.Generator,
            camera: "Photometric | None" = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of pool images -> normalized network inputs and their boxes, augmented in one go.

    ``camera``: pixel steps applied to the crops at the network's resolution (as a camera's blur, noise and
    compression reach a real photo the detector letterboxes); its draws come after all others, so a run
    without it draws exactly what it drew before."""
    from ..data.transforms import crop_batch

    n, _, h0, w0 = images.shape
    out_w, out_h = model.config.input_size
    device = images.device
    u = lambda *shape: torch.rand(*shape, generator=generator).to(device)  # noqa: E731
    fit = min(out_w / w0, out_h / h0)
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scale = fit * torch.exp(lo + (hi - lo) * u(n))
    exact = u(n) < 0.25  # a quarter as the plain letterbox the detector sees at inference
    scale = torch.where(exact, torch.full_like(scale, fit), scale)
    span_x, span_y = out_w - w0 * scale, out_h - h0 * scale
    tx = torch.minimum(span_x, torch.zeros_like(span_x)) - 0.1 * out_w + (span_x.abs() + 0.2 * out_w) * u(n)
    ty = torch.minimum(span_y, torch.zeros_like(span_y)) - 0.1 * out_h + (span_y.abs() + 0.2 * out_h) * u(n)
    tx, ty = torch.where(exact, 0.0, tx), torch.where(exact, 0.0, ty)
    flip = u(n) < 0.5
    sx = torch.where(flip, -scale, scale)
    matrix = torch.zeros(n, 2, 3, device=device)
    matrix[:, 0, 0], matrix[:, 0, 2] = sx, tx + torch.where(flip, scale * (w0 - 1), 0.0)
    matrix[:, 1, 1], matrix[:, 1, 2] = scale, ty

    # photometric jitter on 0-255 floats, then normalize (border = 0 = the mean colour, as the letterbox)
    x = images.float()
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * (0.6 + 0.8 * u(n))[:, None, None, None]  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (0.7 + 0.6 * u(n))[:, None, None, None]  # contrast
    x = (x * (0.7 + 0.6 * u(n))[:, None, None, None]).clamp(0, 255)  # brightness
    crops = crop_batch(model.normalize(x), matrix, (out_w, out_h))
    if camera is not None:  # on 0-255 pixels: the letterbox border (0 after normalizing) is the mean colour
        mean = torch.as_tensor(model.config.mean, dtype=crops.dtype, device=device).view(1, 3, 1, 1)
        std = torch.as_tensor(model.config.std, dtype=crops.dtype, device=device).view(1, 3, 1, 1)
        crops = (camera((crops * std + mean).clamp(0, 255), generator) - mean) / std

    x1 = boxes[..., 0] * sx[:, None] + matrix[:, 0, 2][:, None]
    x2 = boxes[..., 2] * sx[:, None] + matrix[:, 0, 2][:, None]
    y1 = boxes[..., 1] * scale[:, None] + ty[:, None]
    y2 = boxes[..., 3] * scale[:, None] + ty[:, None]
    moved = torch.stack([torch.minimum(x1, x2), y1, torch.maximum(x1, x2), y2], -1)
    limit = torch.tensor([out_w, out_h, out_w, out_h], dtype=moved.dtype, device=device)
    clipped = torch.minimum(moved.clamp(min=0), limit)
    area = lambda b: (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)  # noqa: E731
    side = (clipped[..., 2:] - clipped[..., :2]).min(-1).values
    keep = valid & (side >= 3.0) & (area(clipped) >= 0.35 * area(moved).clamp(min=1e-6))
    return crops, clipped, keep


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_detector(detector: BuiltinDetector, images: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor,
                      areas: torch.Tensor, batch_size: int = 32) -> dict[str, float]:
    """Box AP of ``detector`` on rendered scenes (score threshold lowered to 0.05 for the AP sweep)."""
    threshold = detector.score_threshold
    detector.score_threshold = 0.05
    try:
        dets: list[Detections] = []
        for s in range(0, len(images), batch_size):
            dets.extend(detector.detect_batch(list(images[s:s + batch_size])))
    finally:
        detector.score_threshold = threshold
    gt = [boxes[i][valid[i]].numpy() for i in range(len(images))]
    ga = [areas[i][valid[i]].numpy() for i in range(len(images))]
    return evaluate_boxes(gt, ga, [d.boxes.cpu().numpy() for d in dets], [d.scores.cpu().numpy() for d in dets])


# ---------------------------------------------------------------------------------------------- training
def train_detector(config: DetectorTrainConfig, out: str | os.PathLike, export: str | os.PathLike | None = None,
                   device: str = "cpu", command: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Train the built-in detector; returns the best validation stats (see the module doc).

    ``resume``: continue from ``out/last.pt`` (the settings must be the same as the run that wrote it).
    Without it, a folder that already holds a run's ``last.pt`` is refused (one line), never replaced.
    """
    out = Path(out)
    state_path = out / "last.pt"
    state = None
    if resume:
        if not state_path.is_file():
            raise PoseforgeError(f"{state_path}: no training state to resume from")
        state = load_checkpoint(state_path)
        # (runs from before a setting existed recorded none: they ran with its default)
        saved = {**config_to_dict(DetectorTrainConfig(model=config.model)), **state.get("settings", {})}
        if state.get("kind") != "detector" or saved != config_to_dict(config):
            raise PoseforgeError(f"{state_path}: written by a run with other settings; resume with the same "
                                 "settings, or start a new run in another folder")
    elif state_path.exists():
        raise PoseforgeError(f"{out}: already holds a detector run (last.pt); pass --resume to continue it, "
                             "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    if device == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    start = time.time()
    log.info(f"rendering {config.train_images} training scenes and {config.val_images} validation scenes ...")
    train = render_scenes(config.train_images, config.seed, config.render_size, config.people, progress=True,
                          photo_backgrounds=config.photo_backgrounds, photo_clothing=config.photo_clothing)
    val = render_scenes(config.val_images, config.val_seed, config.render_size, config.people)
    log.info(f"rendered in {time.time() - start:.0f}s")
    model = PersonDetectorNet(config.model).to(device)
    log.info(f"PersonDetectorNet: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
             f"input {config.model.input_size[0]}x{config.model.input_size[1]}")
    steps_per_epoch = config.train_images // config.batch_size
    optimizer = build_optimizer(model, OptimSection(lr=config.lr, weight_decay=config.weight_decay))
    schedule = LRSchedule(optimizer, ScheduleSection(epochs=config.epochs, warmup_iters=config.warmup_iters,
                                                     warmup_start=0.01, kind="cosine", min_lr_ratio=0.02, milestones=()),
                          steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    output_size = (config.model.input_size[0] // config.model.stride, config.model.input_size[1] // config.model.stride)
    # the camera steps only: the colour jitter is augment()'s own
    camera = Photometric(dataclasses.replace(AugmentConfig.camera_sim(), hsv_prob=0.0, brightness=0.0, contrast=0.0)
                         ) if config.camera_sim else None
    best: dict[str, Any] = {"AP": -1.0}
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        restore_rng_state(state["rng"])
        best, start_epoch = dict(state["best"]), int(state["epoch"]) + 1
        log.info(f"resuming {out} at epoch {start_epoch} (best so far: AP {best['AP']:.4f})")
    # Append, never truncate: the history before the starting epoch stays; the records of epochs this run
    # does again (written after the state it resumes from) are dropped first, atomically.
    history = out / "metrics.jsonl"
    if history.exists():
        kept = [line for line in history.read_text().splitlines() if _record_epoch(line) < start_epoch]
        write_bytes_atomic(history, "".join(line + "\n" for line in kept).encode())
    metrics = open(history, "a")
    try:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            order = torch.randperm(config.train_images, generator=generator)
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                x, boxes, keep = augment(train[0][idx].to(device), train[1][idx].to(device), train[2][idx].to(device),
                                         model, config.scale_range, generator, camera)
                targets = encode_targets(boxes, keep.float(), output_size, config.model.stride)
                losses = detector_loss(model(x), targets)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                schedule.step()
                if step % 50 == 0:
                    record = {"kind": "train", "epoch": epoch, "step": step, "lr": schedule.get_last_lr()[0],
                              "time": round(time.time() - start, 1), **{k: v.item() for k, v in losses.items()}}
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    log.info(f"epoch {epoch} step {step}/{steps_per_epoch} loss {record['loss']:.3f} (focal "
                             f"{record['focal']:.3f}, size {record['size']:.3f}, offset {record['offset']:.3f}, giou "
                             f"{record['giou']:.3f}) {record['time']:.0f}s")
            if (epoch + 1) % config.val_interval == 0 or epoch + 1 == config.epochs:
                model.eval()
                stats = evaluate_detector(BuiltinDetector(model, device), *val)
                metrics.write(json.dumps({"kind": "val", "epoch": epoch, "time": round(time.time() - start, 1), **stats}) + "\n")
                metrics.flush()
                log.info(f"epoch {epoch}: val box AP {stats['AP']:.4f} AP50 {stats['AP50']:.4f} AR100 {stats['AR100']:.4f}")
                model.save_pretrained(out / "last")
                if stats["AP"] > best["AP"]:
                    best = {**stats, "epoch": epoch}
                    model.save_pretrained(out / "best")
            # The commit of the epoch, last: a crash before it resumes from the previous epoch's state,
            # which the model folders written above do not contradict (they are rewritten on the way).
            save_checkpoint(state_path, {"kind": "detector", "settings": config_to_dict(config), "epoch": epoch,
                                         "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                         "rng": capture_rng_state(), "best": best})
    finally:
        metrics.close()
    best["minutes"] = round((time.time() - start) / 60, 1)
    write_json_atomic(out / "best.json", best, indent=2)
    if export is not None:
        PersonDetectorNet.from_pretrained(out / "best").save_pretrained(export, dtype=torch.float16)
        record = {"what": "poseforge built-in person detector (CenterNet-style), trained on synthetic people",
                  "command": command or "python -m poseforge.train.detector", "settings": config_to_dict(config),
                  "validation": {"set": f"{config.val_images} synthetic scenes {config.render_size[0]}x{config.render_size[1]}, "
                                        f"{config.people[0]}-{config.people[1]} people, seed {config.val_seed}",
                                 "metric": "COCO box AP (faster-coco-eval, bbox)", **best}}
        write_json_atomic(Path(export) / "training.json", record, indent=2)
        log.info(f"exported the best model (epoch {best['epoch']}, AP {best['AP']:.4f}) to {export} (fp16)")
    return best


def _record_epoch(line: str) -> float:
    """The epoch of a metrics.jsonl line (a torn or malformed line counts as the latest: it is dropped)."""
    try:
        return float(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def config_to_dict(config: DetectorTrainConfig) -> dict[str, Any]:
    """JSON-ready settings (the model config nested)."""
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "model"}
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
    out["model"] = config.model.to_dict()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m poseforge.train.detector --out DIR [--export DIR] [--epochs N] ...``"""
    defaults = DetectorTrainConfig()
    parser = argparse.ArgumentParser(prog="python -m poseforge.train.detector", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--export", default=None, help="write the best model here in fp16 (e.g. poseforge/assets/detector)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--train-images", type=int, default=defaults.train_images)
    parser.add_argument("--val-images", type=int, default=defaults.val_images)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--val-interval", type=int, default=defaults.val_interval)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="CPU threads (default: 2)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--photo-backgrounds", type=float, default=defaults.photo_backgrounds, metavar="P",
                        help="share of training scenes with real-photo backdrops / textures (needs poseforge[sim2real])")
    parser.add_argument("--photo-clothing", type=float, default=defaults.photo_clothing, metavar="P",
                        help="probability of a photo print per garment of each person (needs poseforge[sim2real])")
    parser.add_argument("--camera-sim", action="store_true",
                        help="camera augmentation: white balance, grayscale, Gaussian / motion blur, noise, JPEG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = dataclasses.replace(defaults, epochs=args.epochs, train_images=args.train_images, val_images=args.val_images,
                                 batch_size=args.batch_size, lr=args.lr, val_interval=args.val_interval, threads=args.threads,
                                 seed=args.seed, photo_backgrounds=args.photo_backgrounds,
                                 photo_clothing=args.photo_clothing, camera_sim=args.camera_sim)
    try:
        command = "python -m poseforge.train.detector " + " ".join(argv if argv is not None else sys.argv[1:])
        best = train_detector(config, args.out, args.export, args.device, command, resume=args.resume)
    except PoseforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
