"""Draw Sapiens-style predictions next to the exact labels on held-out synthetic people (a README figure).

For each held-out image (the task presets' held-out seed, never trained on): the image, then for each task
model given its label and its prediction (parts over the image; depth and normals colour-mapped on the
labelled person pixels), and the pose model's skeleton. Every prediction goes through
:class:`poseforge.Predictor`, as ``poseforge predict --model RUN --task ...`` does.

    PYTHONPATH=. python benchmarks/sapiens_gallery.py --seg runs/c/seg-mae --depth runs/c/depth-mae \\
        --normal runs/c/normal-mae --pose runs/c/pose-mae --out docs/images/sapiens_tasks.jpg
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for task in ("seg", "depth", "normal", "pose"):
        parser.add_argument(f"--{task}", help=f"{task} model (run or model folder)")
    parser.add_argument("--out", required=True, help="the figure (.jpg / .png)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1_000_003, help="held-out seed of the sapiens-tiny presets")
    parser.add_argument("--size", default="192x256", help="rendered WIDTHxHEIGHT")
    args = parser.parse_args()

    from poseforge.data.synth import SyntheticPoseDataset
    from poseforge.inference.drawing import colorize_depth, colorize_normals, colorize_parts, contact_sheet
    from poseforge.inference.predictor import Predictor

    width, height = (int(v) for v in args.size.split("x"))
    data = SyntheticPoseDataset(args.images, seed=args.seed, image_size=(width, height), people=1, dense=True)
    models = {t: Predictor(getattr(args, t), detector=None, device="cpu")
              for t in ("seg", "depth", "normal", "pose") if getattr(args, t)}
    cells, labels = [], []
    for i in range(args.images):
        item = data.render(i)
        image, person = item.image, item.parts > 0
        row = [(image, "image")]
        if "seg" in models:
            seg = models["seg"].predict(image).dense["seg"]
            blend = lambda parts: np.where((parts > 0)[..., None], 0.45 * image + 0.55 * colorize_parts(parts), image)
            row += [(blend(item.parts).astype(np.uint8), "parts: label"), (blend(seg).astype(np.uint8), "parts: predicted")]
        if "depth" in models:
            depth = models["depth"].predict(image).dense["depth"]
            row += [(colorize_depth(item.depth, person), "depth: label"), (colorize_depth(depth, person), "depth: predicted")]
        if "normal" in models:
            normals = models["normal"].predict(image).dense["normals"]
            row += [(colorize_normals(item.normals, person), "normals: label"),
                    (colorize_normals(normals, person), "normals: predicted")]
        if "pose" in models:
            box = np.asarray(item.instances[0].bbox, dtype=np.float64)[None]
            result = models["pose"].predict(image, boxes=box, box_format="xywh")
            row.append((result.draw(threshold=0.0, boxes=False, labels=False), "pose: predicted"))
        cells += [c for c, _ in row]
        labels += [name if i == 0 else "" for _, name in row]
    sheet = contact_sheet(cells, cols=len(cells) // args.images, labels=labels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
