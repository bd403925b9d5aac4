"""``poseforge detect IMAGES --out dets.json``: person boxes as a COCO detection results file.

The file (``image_id``, ``category_id`` 1, ``bbox`` x, y, w, h, ``score``) is what ``poseforge eval
--model M --data GT.json --boxes dets.json`` and mmpose's ``bbox_file`` take. Image ids: with ``--gt``,
the ids of the ground truth's ``images`` by file name (an image it lacks is an error); without, the
digits of the file name (COCO's ``000000000785.jpg`` is 785), and sequential ids from 1 where a name
has none or two names give one id (with a warning, since they will not match a ground truth).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from ..errors import PoseforgeError
from ..io import read_json, write_json_atomic
from .common import progress_bar, refuse_overwrite

log = logging.getLogger("poseforge")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders of images")
    parser.add_argument("--out", required=True, metavar="DETS.json", help="the COCO detection results file to write")
    parser.add_argument("--detector", default="auto",
                        help="auto (rtmdet-nano where downloaded, else bundled), bundled, rtmdet-nano, or a PATH.onnx "
                             "end2end RTMDet / YOLOX export (default: auto)")
    parser.add_argument("--gt", metavar="GT.json", help="COCO ground truth whose image ids the results use (by file name)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="drop boxes scoring at or below T (default: the detector's own, 0.3)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (never one of the inputs)")


def list_images(specs: list[str]) -> list[Path]:
    """Image files of the arguments: files as given, folders' images sorted by name (not recursive)."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise PoseforgeError(f"{spec}: no such image file or folder")
    if not files:
        raise PoseforgeError(f"no images found in {', '.join(specs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return list(dict.fromkeys(files))


def gt_image_ids(gt: str | Path) -> dict[str, int]:
    """``file_name -> id`` of a COCO file's ``images`` (base names: the ground truth's folders may differ)."""
    doc = read_json(gt)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise PoseforgeError(f"{gt}: expected a COCO object with an 'images' list")
    ids: dict[str, int] = {}
    for n, image in enumerate(doc["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("file_name"), str) or "id" not in image:
            raise PoseforgeError(f"{gt}: image {n}: expected 'file_name' and 'id'")
        ids[Path(image["file_name"]).name] = image["id"]
    return ids


def image_ids(files: list[Path], gt: str | None) -> list[int]:
    """The result ids of ``files`` (see the module doc)."""
    if gt is not None:
        known = gt_image_ids(gt)
        missing = [f for f in files if f.name not in known]
        if missing:
            raise PoseforgeError(f"{missing[0]}: no image of that file name in {gt}"
                                 + (f" ({len(missing) - 1} more)" if len(missing) > 1 else ""))
        return [known[f.name] for f in files]
    digits = [re.sub(r"\D", "", f.stem) for f in files]
    ids = [int(d) if d else None for d in digits]
    if None in ids or len(set(ids)) != len(ids):
        log.warning("image ids: file names without unique digits; numbering the images 1..N (pass --gt GT.json "
                    "to use the ground truth's ids)")
        return list(range(1, len(files) + 1))
    log.info("image ids: the digits of the file names (pass --gt GT.json to use the ground truth's ids)")
    return [int(i) for i in ids]  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    files = list_images(args.images)
    refuse_overwrite([args.out], [*files, *([args.gt] if args.gt else []),
                                  *([args.detector] if Path(args.detector).is_file() else [])],
                     args.force, what="detections")
    ids = image_ids(files, args.gt)

    from ..data.images import load_image
    from ..inference.detectors import load_detector

    detector = load_detector(args.detector, device=args.device, score_threshold=args.score_threshold)
    results: list[dict] = []
    with progress_bar("detecting") as progress:
        for n, (file, image_id) in enumerate(zip(files, ids)):
            found = detector(load_image(file), key=file.name)
            keep = found.labels == 0  # person (label 0 of every adapter)
            boxes, scores = found.boxes[keep].double().cpu().numpy(), found.scores[keep].double().cpu().numpy()
            for (x1, y1, x2, y2), score in zip(boxes.tolist(), scores.tolist()):
                results.append({"image_id": image_id, "category_id": 1,
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": round(float(score), 5)})
            progress(n + 1, len(files))
    write_json_atomic(args.out, results)
    log.info(f"wrote {len(results)} person boxes in {len(files)} images to {args.out} (detector: {detector.name})")
    return 0
