"""``poseforge synth``: render a synthetic dataset to disk in COCO format.

Layout of ``--out DIR``::

    annotations.json      COCO keypoints (wholebody133 in COCO-WholeBody's split fields, sapiens308 as
                          one flat list of 308), with
                          compressed-RLE instance masks in "segmentation"
    images/00000000.jpg   RGB images (JPEG quality pinned, so a seed gives byte-identical files)
    dense/00000000_parts.png      uint8 Sapiens body-part classes (0 = background)      [--dense]
    dense/00000000_depth.png      uint16 camera z in millimetres (0 = nothing)          [--dense]
    dense/00000000_normals.png    uint8 RGB camera-space normals, (n + 1) / 2 * 255,
                                  OpenCV axes (x right, y down, z forward); 0 = none    [--dense]
    dense/00000000_instances.png  uint8 instance ids (k = annotation id % 100; 0 = none) [--dense]
    contact_sheet.jpg, dense_sheet.jpg                                                  [--contact-sheet]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from ..data.coco import write_coco
from ..data.synth.dataset import RenderedImage, SyntheticPoseDataset
from ..data.synth.labels import mask_to_rle
from ..data.synth.parallel import built_once, index_chunks, render_pool, render_progress
from ..errors import PoseforgeError
from ..io import write_bytes_atomic
from .common import range_argument, size_argument

log = logging.getLogger("poseforge")

JPEG_QUALITY = 95
SHEET_QUALITY = 85  # previews: smaller files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--num-images", required=True, type=int, metavar="N", help="number of images to render")
    parser.add_argument("--seed", type=int, default=0, help="image i is rendered from (seed, i) alone (default 0)")
    parser.add_argument("--size", type=size_argument, default=(640, 480), metavar="WxH", help="image size (default 640x480)")
    parser.add_argument("--people", type=range_argument, default=(1, 4), metavar="MIN-MAX",
                        help="figures per image (default 1-4; 1 frames one person like a top-down crop)")
    parser.add_argument("--keypoints", default="coco17",
                        choices=("coco17", "wholebody133", "sapiens308", "ap10k17"),
                        help="keypoint set; ap10k17 renders quadrupeds; sapiens308 labels 63 of its 308 joints, "
                             "the others visibility 0 (default coco17)")
    parser.add_argument("--dense", action="store_true", help="also write part, depth, normal and instance maps to dense/")
    parser.add_argument("--device", default="cpu", help="torch device for rendering: cpu or cuda (default cpu)")
    parser.add_argument("--contact-sheet", action="store_true",
                        help="also write contact_sheet.jpg (skeleton overlays) and dense_sheet.jpg (image | parts | depth | normals)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg, quality 95)")
    parser.add_argument("--framing", choices=("auto", "crop", "scene"), default="auto",
                        help="crop: one figure fills the frame; scene: a group at random distance (default: crop for --people 1)")
    parser.add_argument("--photo-backgrounds", type=float, default=0.0, metavar="P",
                        help="probability of a real-photo backdrop per image and of a photo texture per surface "
                             "(needs pip install poseforge[sim2real]; default 0)")
    parser.add_argument("--photo-clothing", type=float, default=0.0, metavar="P",
                        help="probability of a photo print per garment of each person (needs "
                             "pip install poseforge[sim2real]; default 0)")
    parser.add_argument("--facing-camera", type=float, default=0.5, metavar="F",
                        help="share of people whose front faces the camera (default 0.5: every heading equally likely)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per vectorized render call (default: by size)")
    parser.add_argument("--workers", type=int, default=0,
                        help="render in this many processes (one CPU core each; output is identical; default 0 or 1: in-process)")


def _encode(image: np.ndarray, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{fmt}", bgr, params)
    if not ok:
        raise PoseforgeError(f"could not encode a {fmt} image")
    return buf.tobytes()


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise PoseforgeError("could not encode a png image")
    return buf.tobytes()


def dense_files(stem: str, r: RenderedImage) -> dict[str, bytes]:
    """One image's dense maps as PNG files ``{"dense/<stem>_<map>.png": bytes}`` (encodings: module doc)."""
    depth_mm = np.clip(np.round(r.depth.astype(np.float64) * 1000.0), 0, 65535).astype(np.uint16)
    normals = np.where((np.abs(r.normals).sum(-1) > 0)[..., None], np.round((np.clip(r.normals, -1, 1) + 1) * 127.5), 0)
    return {
        f"dense/{stem}_parts.png": _png(r.parts),
        f"dense/{stem}_depth.png": _png(depth_mm),
        f"dense/{stem}_normals.png": _png(cv2.cvtColor(normals.astype(np.uint8), cv2.COLOR_RGB2BGR)),
        f"dense/{stem}_instances.png": _png(r.instance_ids),
    }


def sheets(samples: list[RenderedImage], dataset: SyntheticPoseDataset) -> tuple[np.ndarray, np.ndarray]:
    """(skeleton-overlay grid, dense grid with rows image | parts | depth | normals) for some samples."""
    from ..inference.drawing import colorize_depth, colorize_normals, colorize_parts, contact_sheet, draw_pose

    ks = dataset.keypoint_set
    overlays = []
    for r in samples:
        if r.instances:
            kps = np.stack([i.keypoints for i in r.instances])
            vis = np.stack([i.visibility for i in r.instances])
            overlays.append(draw_pose(r.image, kps, vis, ks, threshold=0.5, occluded_below=1.5))
        else:
            overlays.append(r.image)
    cols = min(len(samples), 8 if dataset.image_size[0] < dataset.image_size[1] else 4)  # portrait crops: wider rows
    people = contact_sheet(overlays, cols)
    rows = []
    for r in samples[:4]:
        fg = r.instance_ids > 0
        rows += [r.image, colorize_parts(r.parts), colorize_depth(r.depth, fg), colorize_normals(r.normals, fg)]
    dense = contact_sheet(rows, 4)
    return people, dense


def _render_files(options: dict, indices: list[int], fmt: str, dense: bool, keep: int) -> list[tuple]:
    """Render images and encode their files (runs in worker processes too): per image its index,
    ``{relative path: bytes}``, COCO-ready records and (for the first ``keep``) the RenderedImage."""
    dataset = built_once(SyntheticPoseDataset, options)
    out = []
    for r in dataset.render_batch(indices):
        stem = f"{r.index:08d}"
        files = {f"images/{stem}.{fmt}": _encode(r.image, fmt)}
        if dense:
            files.update(dense_files(stem, r))
        records = [inst.copy(image=None, extras={"segmentation": mask_to_rle(inst.extras["mask"])}) for inst in r.instances]
        out.append((r.index, files, records, r if r.index < keep else None))
    return out


def run(args: argparse.Namespace) -> int:
    if args.num_images < 1:
        raise PoseforgeError(f"--num-images must be >= 1, got {args.num_images}")
    if args.workers < 0:
        raise PoseforgeError(f"--workers must be >= 0, got {args.workers}")
    options = dict(num_images=args.num_images, seed=args.seed, image_size=args.size, people=args.people,
                   keypoint_set=args.keypoints, dense=False, device=args.device, framing=args.framing,
                   batch_size=args.batch_size, photo_backgrounds=args.photo_backgrounds,
                   photo_clothing=args.photo_clothing, facing_camera=args.facing_camera)
    dataset = SyntheticPoseDataset(**options)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PoseforgeError(f"{out}: exists and is not a folder")
    image_dir = out / "images"
    dense_dir = out / "dense"
    image_dir.mkdir(parents=True, exist_ok=True)
    if args.dense:
        dense_dir.mkdir(parents=True, exist_ok=True)
    images, instances, samples = [], [], []
    keep = 16 if args.contact_sheet else 0
    batches = index_chunks(args.num_images, dataset.batch_size)
    start = time.perf_counter()
    with render_progress(args.num_images) as advance, render_pool(args.workers) as pool:
        jobs = (pool.map(_render_files, [options] * len(batches), batches, [args.format] * len(batches),
                         [args.dense] * len(batches), [keep] * len(batches))
                if pool is not None else (_render_files(options, b, args.format, args.dense, keep) for b in batches))
        for results in jobs:  # in order, so the output does not depend on the number of workers
            for index, files, records, sample in results:
                for rel, data in files.items():
                    write_bytes_atomic(out / rel, data)
                info = dataset.image_info(index, f"{index:08d}.{args.format}")
                for inst in records:
                    inst.image_path = str(image_dir / info.file_name)
                instances.extend(records)
                images.append(info)
                if sample is not None:
                    samples.append(sample)
                advance(1)
    write_coco(out / "annotations.json", instances, images, dataset.keypoint_set)
    if args.contact_sheet:
        people, dense = sheets(samples, dataset)
        write_bytes_atomic(out / "contact_sheet.jpg", _encode(people, "jpg", SHEET_QUALITY))
        write_bytes_atomic(out / "dense_sheet.jpg", _encode(dense, "jpg", SHEET_QUALITY))
    took = time.perf_counter() - start
    print(f"wrote {len(images)} images and {len(instances)} {dataset.keypoint_set.category} instances "
          f"({dataset.keypoint_set.name}) to {out} in {took:.1f} s ({len(images) / max(took, 1e-9):.1f} images/s)")
    return 0


