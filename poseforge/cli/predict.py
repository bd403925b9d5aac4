"""``poseforge predict INPUT``: poses for your own images, folders, videos or a webcam.

Writes into ``--out`` (default ``./poseforge-predictions``):

* images: ``NAME.jpg`` (poses drawn) and ``NAME.json`` (boxes, keypoints, scores) per image, plus
  ``predictions.json`` with every image's result;
* videos (recognized by extension, or any file with ``--video``) and webcams (``INPUT`` = 0, 1, ...):
  ``NAME.mp4`` (poses and track ids drawn) and ``NAME.json`` (one entry per frame, with a stable
  ``track_id`` per person).

Files in a folder that are not images or cannot be decoded are skipped with a one-line warning each.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..errors import PoseforgeError
from ..io import write_bytes_atomic, write_json_atomic

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="an image, a folder of images, a video file, or a webcam index (0, 1, ...)")
    parser.add_argument("--out", default="poseforge-predictions", metavar="DIR", help="output folder (default: ./poseforge-predictions)")
    parser.add_argument("--model", default="bundled",
                        help="pose model: a weights name (vitpose-b, rtmpose-m, dwpose-l ... downloaded once and "
                             "converted; see poseforge.hub.list_weights()), bundled, a model folder / .safetensors, "
                             "a training run folder (default: bundled, trained on synthetic people)")
    parser.add_argument("--detector", default="auto",
                        help="person boxes: rtmdet-nano (the real RTMDet-nano, downloaded once), bundled (trained on "
                             "synthetic people), PATH.onnx (RTMDet/YOLOX end2end export), a COCO detection results "
                             ".json, or 'none' (the whole image is one person); auto: rtmdet-nano where it is cached, "
                             "else bundled (default: auto)")
    parser.add_argument("--video", action="store_true",
                        help="treat INPUT as a video whatever its extension (video files are recognized by "
                             "extension; results get track ids and an annotated .mp4)")
    parser.add_argument("--no-draw", dest="draw", action="store_false", help="write JSON only, no annotated images / video")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test (faster)")
    parser.add_argument("--box-threshold", type=float, default=None, metavar="T", help="minimum detector box score (default: 0.3)")
    parser.add_argument("--keypoint-threshold", type=float, default=0.3, metavar="T", help="draw keypoints scoring above T (default: 0.3)")
    parser.add_argument("--max-people", type=int, default=None, metavar="N", help="keep the N best boxes per frame")
    parser.add_argument("--smooth", action="store_true", help="One-Euro smoothing of tracked keypoints in videos")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop videos / webcams after N frames")


def _jpeg(image) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise PoseforgeError("could not encode a JPEG image")
    return data.tobytes()


def run(args: argparse.Namespace) -> int:
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning (fast on shared cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..inference.predictor import Predictor
    from ..inference.tracking import OneEuroFilter, PoseTracker
    from ..inference.video import VideoWriter, is_video_file

    source: Any = args.input
    webcam = source.isdigit() and not Path(source).exists()
    if webcam:
        source = int(source)
    elif not Path(source).exists():
        raise PoseforgeError(f"{source}: no such file or folder")
    as_video = webcam or args.video or (Path(source).is_file() and is_video_file(source))
    if args.video and Path(str(source)).is_dir():
        raise PoseforgeError(f"{source}: --video needs a video file or a webcam index, not a folder")
    detector = None if str(args.detector).lower() == "none" else args.detector
    if str(detector).lower() == "auto":
        from ..inference.detectors.builtin import auto_detector_name

        detector = auto_detector_name()
        print(f"person detector: {detector}" + (" (trained on synthetic people; for real photos: --detector rtmdet-nano, "
                                                "downloaded once)" if detector == "bundled" else ""))
    predictor = Predictor(args.model, detector=detector, device=args.device, flip_test=args.flip,
                          box_score_threshold=args.box_threshold, max_people=args.max_people, tracker=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if as_video:
        name = f"webcam{source}" if webcam else Path(source).stem
        tracker = (PoseTracker(predictor.keypoint_set, smoothing=OneEuroFilter() if args.smooth else False)
                   if predictor.keypoint_set is not None else None)  # dense models: no people to track
        frames, people, ids = [], 0, set()
        writer = None
        reader_fps = 25.0
        if not webcam:
            from ..inference.video import VideoReader

            with VideoReader(source) as probe:
                reader_fps = probe.fps or 25.0
        try:
            for result in predictor.predict_video(source, tracker=tracker, max_frames=args.max_frames):
                frames.append(result.to_dict())
                people += len(result)
                ids.update(int(i) for i in result.track_ids)
                if args.draw:
                    if writer is None:
                        writer = VideoWriter(out / f"{name}.mp4", fps=reader_fps)
                    writer.write(result.draw(threshold=args.keypoint_threshold))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()
        write_json_atomic(out / f"{name}.json", {"source": str(source), "frames": frames}, indent=None)
        seconds = time.perf_counter() - start
        log.info(f"{len(frames)} frames, {people} poses, {len(ids)} tracks in {seconds:.1f}s "
                 f"({len(frames) / max(seconds, 1e-9):.1f} frames/s) -> {out / (name + '.json')}"
                 + (f", {out / (name + '.mp4')}" if args.draw and frames else ""))
        return 0

    skipped: list[str] = []

    def on_skip(path: Path, reason: str) -> None:
        skipped.append(str(path))
        log.warning(f"skipping {path}: {reason}")

    results = []
    stems: dict[str, int] = {}
    stream = (predictor.predict_folder(source, on_skip=on_skip) if Path(source).is_dir()
              else iter([predictor.predict(source)]))
    for result in stream:
        stem = Path(result.source or "image").stem
        count = stems.get(stem, 0)
        stems[stem] = count + 1
        name = stem if count == 0 else f"{stem}_{count}"  # same stem, other extension: keep both
        result.to_json(out / f"{name}.json")
        if args.draw:
            write_bytes_atomic(out / f"{name}.jpg", _jpeg(result.draw(threshold=args.keypoint_threshold)))
        results.append(result.to_dict())
        log.info(f"{result.source}: {len(result)} {'person' if len(result) == 1 else 'people'}")
    write_json_atomic(out / "predictions.json", results, indent=None)
    seconds = time.perf_counter() - start
    log.info(f"{len(results)} image(s), {sum(len(r['people']) for r in results)} people in {seconds:.1f}s -> {out}"
             + (f"; skipped {len(skipped)} file(s)" if skipped else ""))
    if not results:
        raise PoseforgeError(f"{source}: no image could be processed")
    return 0
