"""``poseforge predict INPUT``: poses for your own images, folders, videos or a webcam.

Writes into ``--out`` (default ``./poseforge-predictions``), each output named after its whole input file
name, extension included, so that two inputs never share an output (``x.jpg`` and ``x.png``):

* images: ``NAME.EXT.poses.jpg`` (poses drawn) and ``NAME.EXT.json`` (boxes, keypoints, scores) per image,
  plus ``predictions.json`` with every image's result (``file_name``, and ``image_id`` with ``--gt``);
* videos (recognized by extension, or any file with ``--video``) and webcams (``INPUT`` = 0, 1, ...):
  ``NAME.EXT.poses.mp4`` (``webcamN.mp4``; poses and track ids drawn) and ``NAME.EXT.json`` (one entry per
  frame, with a stable ``track_id`` per person);
* with ``--gt GT.json --coco-results RES.json``: COCO keypoint results for ``poseforge eval --results``,
  image ids from the ground truth's file names (``--boxes gt``: its person boxes instead of a detector).

Nothing is overwritten by surprise: an output that is an input file is refused (``--force`` included),
earlier results are replaced only with ``--force``, and both are checked before any model loads.
Files in a folder that are not images or cannot be decoded are skipped with a one-line warning each.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PoseforgeError
from ..io import write_bytes_atomic, write_json_atomic
from .common import add_verify_argument, refuse_overwrite, same_path

log = logging.getLogger("poseforge")

DRAWN_SUFFIX = ".poses"  # x.jpg -> x.jpg.poses.jpg: can never be an input's own name (inputs keep theirs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="an image, a folder of images, a video file, or a webcam index (0, 1, ...)")
    parser.add_argument("--out", default="poseforge-predictions", metavar="DIR",
                        help="output folder, not the input folder (default: ./poseforge-predictions)")
    parser.add_argument("--force", action="store_true",
                        help="replace earlier results in --out (and an existing --coco-results file); never an input")
    parser.add_argument("--model", default="bundled",
                        help="pose model: a weights name (vitpose-b, rtmpose-m, dwpose-l ... downloaded once and "
                             "converted; see poseforge.hub.list_weights()), bundled, a model folder / .safetensors, "
                             "a training run folder (default: bundled, trained on synthetic people)")
    add_verify_argument(parser)
    parser.add_argument("--detector", default="auto",
                        help="person boxes: rtmdet-nano (the real RTMDet-nano, downloaded once), bundled (trained on "
                             "synthetic people), PATH.onnx (RTMDet/YOLOX end2end export), a COCO detection results "
                             ".json (image ids from --gt's file names when given, else the file name's digits), or "
                             "'none' (the whole image is one person); auto: rtmdet-nano where it is cached, else "
                             "bundled (default: auto)")
    parser.add_argument("--video", action="store_true",
                        help="treat INPUT as a video whatever its extension (video files are recognized by "
                             "extension; results get track ids and an annotated .mp4)")
    parser.add_argument("--no-draw", dest="draw", action="store_false", help="write JSON only, no annotated images / video")
    parser.add_argument("--task", choices=("pose", "seg", "depth", "normal"), default=None,
                        help="what to draw: pose (keypoint models) or, for dense (Sapiens) models, seg (body parts over the "
                             "image), depth or normal (the image beside its colour-mapped depth / normals); dense models also "
                             "write NAME.EXT.dense.npz with every map they predict (default: the model's first)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test (faster)")
    parser.add_argument("--box-threshold", type=float, default=None, metavar="T",
                        help="drop detector boxes scoring at or below T (default: the detector's own: 0.3 for "
                             "bundled, rtmdet-nano, .onnx and ultralytics detectors, 0.0 for a detection results "
                             ".json; not applied to --boxes gt)")
    parser.add_argument("--keypoint-threshold", type=float, default=0.3, metavar="T", help="draw keypoints scoring above T (default: 0.3)")
    parser.add_argument("--max-people", type=int, default=None, metavar="N", help="keep the N best boxes per frame")
    parser.add_argument("--smooth", action="store_true", help="One-Euro smoothing of tracked keypoints in videos")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop videos / webcams after N frames")
    coco = parser.add_argument_group("COCO results for poseforge eval (images only)")
    coco.add_argument("--gt", metavar="GT.json",
                      help="COCO keypoint ground truth: each image's id is the one of its file name there (images "
                           "not in it are skipped with a warning)")
    coco.add_argument("--coco-results", metavar="RES.json",
                      help="write COCO keypoint results (image_id, category_id, keypoints, score) here; needs --gt")
    coco.add_argument("--boxes", choices=("detector", "gt"), default="detector",
                      help="person boxes: from --detector, or gt: the non-crowd person boxes of --gt, clipped to the "
                           "image, score 1 (as poseforge eval --model with ground-truth boxes) (default: detector)")


@dataclass
class _GroundTruth:
    """What ``--gt`` gives the command: image ids by file name, person boxes by image id, the category."""

    path: Path
    ids: dict[str, int]
    ambiguous: set[str]
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # image id -> [N, 4] xywh, clipped
    category_id: int = 1
    wholebody_split: bool = False


def _read_ground_truth(path: str, with_boxes: bool) -> _GroundTruth:
    """Image ids by file name (the name only: GT ``file_name``s may carry folders), and with ``with_boxes``
    the boxes top-down evaluation uses: :meth:`EvalSet.box_records` of the ground-truth boxes."""
    from ..data.coco import read_coco
    from ..data.evalsets import records_eval_set

    gt = read_coco(path)
    ids: dict[str, int] = {}
    ambiguous: set[str] = set()
    for info in gt.images.values():
        name = Path(info.file_name).name
        if name in ids:
            ambiguous.add(name)
        ids[name] = info.id
    category = next((int(c["id"]) for c in gt.categories if isinstance(c, dict) and "id" in c), 1)
    result = _GroundTruth(Path(path), ids, ambiguous, category_id=category, wholebody_split=gt.wholebody_split)
    if with_boxes:
        grouped: dict[int, list[np.ndarray]] = {}
        for record in records_eval_set(gt, str(path)).box_records():
            grouped.setdefault(int(record.image_id), []).append(np.asarray(record.bbox, dtype=np.float64))
        result.boxes = {i: np.stack(b) for i, b in grouped.items()}
    return result


def _image_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(image files, [(skipped file, reason)])`` of a folder, sorted by name, not recursive (as
    :meth:`Predictor.predict_folder` lists them)."""
    from ..inference.predictor import IMAGE_SUFFIXES
    from ..inference.video import is_video_file

    images, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            kind = "a video (pass it on its own)" if is_video_file(path) else f"unsupported file type '{path.suffix or path.name}'"
            skipped.append((path, kind))
    return images, skipped


def _protected_inputs(args: argparse.Namespace, inputs: list[Path]) -> list[Path]:
    """Every file the command reads: never an output, even with ``--force``."""
    protected = list(inputs)
    for spec in (args.gt, args.detector, args.model):
        path = Path(str(spec))
        if path.is_file():
            protected.append(path)
        elif path.is_dir():
            protected += [p for p in path.iterdir() if p.is_file()]  # a model folder's config.json, weights ...
    return protected


def _jpeg(image) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise PoseforgeError("could not encode a JPEG image")
    return data.tobytes()


def run(args: argparse.Namespace) -> int:
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning (fast on shared cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..inference.video import is_video_file

    source: Any = args.input
    webcam = source.isdigit() and not Path(source).exists()
    if webcam:
        source = int(source)
    elif not Path(source).exists():
        raise PoseforgeError(f"{source}: no such file or folder")
    as_video = webcam or args.video or (Path(source).is_file() and is_video_file(source))
    if args.video and Path(str(source)).is_dir():
        raise PoseforgeError(f"{source}: --video needs a video file or a webcam index, not a folder")
    if as_video and (args.gt or args.coco_results or args.boxes == "gt"):
        raise PoseforgeError("--gt, --coco-results and --boxes gt are for images and folders of images, not videos")
    if args.coco_results and not args.gt:
        raise PoseforgeError("--coco-results needs --gt GT.json: image ids come from its file names")
    if args.boxes == "gt" and not args.gt:
        raise PoseforgeError("--boxes gt needs --gt GT.json (the person boxes are its annotations)")
    if args.gt and not Path(args.gt).is_file():
        raise PoseforgeError(f"{args.gt}: no such ground-truth file")
    out = Path(args.out)
    if not webcam and Path(source).is_dir() and same_path(out, source):
        # the drawn copies would sit among (and next time be read as) the photos
        raise PoseforgeError(f"--out {args.out} is the input folder; write the results to another folder")

    # Plan every output file, and refuse before any model loads (seconds to minutes) or anything is written.
    if as_video:
        name = f"webcam{source}" if webcam else Path(source).name
        drawn_video = out / (f"{name}.mp4" if webcam else f"{name}{DRAWN_SUFFIX}.mp4")
        planned = [out / f"{name}.json"] + ([drawn_video] if args.draw else [])
        inputs = [] if webcam else [Path(source)]
        skipped_files: list[tuple[Path, str]] = []
    else:
        inputs, skipped_files = _image_files(Path(source)) if Path(source).is_dir() else ([Path(source)], [])
        planned = [out / "predictions.json"]
        for path in inputs:
            planned.append(out / f"{path.name}.json")
            if args.draw and args.task in (None, "pose"):  # (a dense model's drawings are planned once it is loaded)
                planned.append(out / f"{path.name}{DRAWN_SUFFIX}.jpg")
        if args.coco_results:
            planned.append(Path(args.coco_results))
    refuse_overwrite(planned, _protected_inputs(args, inputs), args.force, what="results")
    gt = _read_ground_truth(args.gt, with_boxes=args.boxes == "gt") if args.gt else None

    from ..inference.predictor import Predictor

    detector = None if str(args.detector).lower() == "none" or args.boxes == "gt" else args.detector
    if str(detector).lower() == "auto":
        from ..inference.detectors.builtin import auto_detector_name

        detector = auto_detector_name()
    predictor = Predictor(args.model, detector=detector, device=args.device, flip_test=args.flip,
                          box_score_threshold=args.box_threshold, max_people=args.max_people, tracker=False,
                          verify=args.verify)
    if predictor.keypoint_set is None:  # a dense model: its maps are named by task, known once it is loaded
        _plan_dense_outputs(args, predictor, inputs, out, as_video)
    elif args.task not in (None, "pose"):
        raise PoseforgeError(f"--task {args.task}: {args.model} is a keypoint model; it draws --task pose")
    if str(args.detector).lower() == "auto" and predictor.detector is not None:  # (a bottom-up model uses none)
        print(f"person detector: {detector}" + (" (trained on synthetic people; for real photos: --detector rtmdet-nano, "
                                                "downloaded once)" if detector == "bundled" else ""))
    out.mkdir(parents=True, exist_ok=True)
    if as_video:
        return _run_video(args, predictor, source, webcam, out, planned)
    return _run_images(args, predictor, inputs, skipped_files, gt, out)


def _run_video(args: argparse.Namespace, predictor: Any, source: Any, webcam: bool, out: Path,
               planned: list[Path]) -> int:
    from ..inference.tracking import OneEuroFilter, PoseTracker
    from ..inference.video import VideoReader, VideoWriter

    start = time.perf_counter()
    json_path, video_path = planned[0], (planned[1] if args.draw else None)
    tracker = (PoseTracker(predictor.keypoint_set, smoothing=OneEuroFilter() if args.smooth else False)
               if predictor.keypoint_set is not None else None)  # dense models: no people to track
    frames, people, ids = [], 0, set()
    writer = None
    reader_fps = 25.0
    if not webcam:
        with VideoReader(source) as probe:
            reader_fps = probe.fps or 25.0
    try:
        for result in predictor.predict_video(source, tracker=tracker, max_frames=args.max_frames):
            frames.append(result.to_dict())
            people += len(result)
            ids.update(int(i) for i in result.track_ids)
            if video_path is not None:
                if writer is None:
                    writer = VideoWriter(video_path, fps=reader_fps)
                writer.write(result.draw(threshold=args.keypoint_threshold, task=args.task))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    write_json_atomic(json_path, {"source": str(source), "frames": frames}, indent=None)
    seconds = time.perf_counter() - start
    log.info(f"{len(frames)} frames, {people} poses, {len(ids)} tracks in {seconds:.1f}s "
             f"({len(frames) / max(seconds, 1e-9):.1f} frames/s) -> {json_path}"
             + (f", {video_path}" if video_path is not None and frames else ""))
    return 0


def _plan_dense_outputs(args: argparse.Namespace, predictor: Any, inputs: list[Path], out: Path, as_video: bool) -> None:
    """Check ``--task`` against what a dense model predicts, and refuse to replace its outputs (before any is written)."""
    from ..inference.predictor import DENSE_TASK_NAMES

    held = [DENSE_TASK_NAMES[t] for t in predictor.model.codec.tasks]
    if args.task is not None and args.task not in held:
        raise PoseforgeError(f"--task {args.task}: {args.model} predicts {', '.join(held)}")
    if as_video:
        return
    task = args.task or held[0]
    planned = [out / f"{p.name}.dense.npz" for p in inputs]
    if args.draw:
        planned += [out / f"{p.name}.{task}.jpg" for p in inputs]
    refuse_overwrite(planned, _protected_inputs(args, inputs), args.force, what="results")


def _drawn_suffix(result: Any, task: str | None) -> str:
    """``.poses`` for keypoints, ``.seg`` / ``.depth`` / ``.normal`` for a dense model's drawn map."""
    if result.keypoint_set is not None:
        return DRAWN_SUFFIX
    held = result.dense_tasks
    return f".{task or (held[0] if held else 'dense')}"


def _write_dense(path: Path, maps: dict[str, np.ndarray]) -> None:
    """The dense maps at the image's resolution: ``seg`` uint8 class ids, ``depth`` and ``normals`` float16."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: v if k == "seg" else v.astype(np.float16) for k, v in maps.items()})
    write_bytes_atomic(path, buffer.getvalue())


def _run_images(args: argparse.Namespace, predictor: Any, inputs: list[Path], skipped_files: list[tuple[Path, str]],
                gt: _GroundTruth | None, out: Path) -> int:
    from ..data.images import load_image
    from ..errors import DataError

    start = time.perf_counter()
    skipped: list[str] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append(str(path))
        log.warning(f"skipping {path}: {reason}")

    for path, reason in skipped_files:
        skip(path, reason)
    results: list[dict[str, Any]] = []
    coco: list[dict[str, Any]] = []
    for path in inputs:
        image_id = None
        boxes = None
        if gt is not None:
            if path.name in gt.ambiguous:
                skip(path, f"several images of {gt.path} are named {path.name}; cannot tell its image id")
                continue
            if path.name not in gt.ids:
                skip(path, f"not in {gt.path} (no image of that file name)")
                continue
            image_id = gt.ids[path.name]
            if args.boxes == "gt":
                boxes = gt.boxes.get(image_id, np.zeros((0, 4)))
                boxes = boxes[(boxes[:, 2] > 0) & (boxes[:, 3] > 0)]  # a box clipped away: nothing to crop
        try:
            array = load_image(path)
        except DataError as e:
            skip(path, str(e).removeprefix(f"{path}: "))
            continue
        # key: the GT's image id, so that a detection results file is looked up by it, never by the
        # digits of the file name (003799.jpg is not image 3799 when the GT says 1)
        result = predictor.predict(array, boxes=boxes, box_format="xywh", key=image_id if image_id is not None else str(path))
        result.source = str(path)
        result.to_json(out / f"{path.name}.json")
        if args.draw:
            write_bytes_atomic(out / f"{path.name}{_drawn_suffix(result, args.task)}.jpg",
                               _jpeg(result.draw(threshold=args.keypoint_threshold, task=args.task)))
        if result.dense:
            _write_dense(out / f"{path.name}.dense.npz", result.dense)
        entry = {"file_name": path.name, **({"image_id": image_id} if image_id is not None else {}), **result.to_dict()}
        results.append(entry)
        if image_id is not None:
            coco += result.to_coco(image_id, category_id=gt.category_id if gt is not None else 1)
        log.info(f"{path}: " + (f"{', '.join(result.dense_tasks)} map(s)" if result.keypoint_set is None
                                 else f"{len(result)} {'person' if len(result) == 1 else 'people'}"))
    write_json_atomic(out / "predictions.json", results, indent=None)
    if args.coco_results:
        from ..data.coco import write_coco_results

        write_coco_results(args.coco_results, coco, wholebody_split=gt.wholebody_split if gt is not None else None)
        log.info(f"wrote {len(coco)} COCO keypoint results for {len(results)} image(s) to {args.coco_results} "
                 f"(score them: poseforge eval --gt {args.gt} --results {args.coco_results})")
    seconds = time.perf_counter() - start
    log.info(f"{len(results)} image(s), {sum(len(r['people']) for r in results)} people in {seconds:.1f}s -> {out}"
             + (f"; skipped {len(skipped)} file(s)" if skipped else ""))
    if not results:
        raise PoseforgeError(f"{args.input}: no image could be processed")
    return 0
