"""``poseforge-rt``: poses in images, folders and videos with an exported model, onnxruntime only (no torch).

    poseforge-rt INPUT --model pose.onnx [--detector rtmdet.onnx] [--out DIR] [--boxes-threshold 0.3]
                 [--threads N] [--force]

Writes ``DIR/predictions.json`` (per image or video frame: the file name, frame number for videos, image size
and the persons with ``bbox`` xyxy, ``score``, ``keypoints`` [[x, y], ...] and ``keypoint_scores``) and the
drawn images (same names) or video (``STEM.mp4``). Outputs never overwrite inputs; existing outputs are
replaced only with ``--force``. Errors are one line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np

from ..errors import PoseforgeError
from ._checks import MAX_INPUT_SIDE
from .session import MAX_THREADS

__all__ = ["main", "build_parser"]

PROG = "poseforge-rt"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Poses in images, folders of images and videos with an exported poseforge "
                                       "ONNX model (onnxruntime, no torch).")
    p.add_argument("input", metavar="INPUT", help="an image, a folder of images or a video file")
    p.add_argument("--model", required=True, metavar="ONNX", help="the pose model (poseforge export, or e.g. rtmlib's "
                   "RTMPose with --mean/--std)")
    p.add_argument("--detector", metavar="ONNX", help="an end2end RTMDet / YOLOX person detector export (top-down "
                   "models; without it each whole image is one person box)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ./INPUTNAME-poses)")
    p.add_argument("--boxes-threshold", type=float, default=0.3, metavar="T", help="keep detector boxes scoring above "
                   "T (default 0.3)")
    p.add_argument("--keypoint-threshold", type=float, default=0.3, metavar="T",
                   help="draw keypoints scoring above T (default 0.3)")
    p.add_argument("--threads", type=int, metavar="N", help="onnxruntime intra-op threads (default: its choice)")
    p.add_argument("--flip-test", action="store_true", help="average in mirrored crops (raw-output exports)")
    p.add_argument("--no-draw", action="store_true", help="write predictions.json only")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    files = p.add_argument_group("files without poseforge metadata")
    files.add_argument("--input-size", metavar="WxH", help="model input size, e.g. 192x256")
    files.add_argument("--mean", metavar="R,G,B", help="RGB mean on the 0-255 scale, e.g. 123.675,116.28,103.53")
    files.add_argument("--std", metavar="R,G,B", help="RGB std on the 0-255 scale, e.g. 58.395,57.12,57.375")
    files.add_argument("--split-ratio", type=float, metavar="R", help="SimCC bins per input pixel (e.g. 2)")
    files.add_argument("--codec", choices=("simcc", "msra", "dark", "udp"), help="how raw outputs decode")
    return p


def _numbers(text: str | None, count: int, what: str, sep: str = ",", positive: bool = False) -> list[float] | None:
    """``count`` finite numbers (each > 0 with ``positive``) separated by ``sep``, or a one-line error."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.lower().split(sep)]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
        kind = "positive numbers" if positive else "finite numbers"
        raise PoseforgeError(f"{what}: expected {count} {kind} separated by '{sep}', got {text!r}")
    return values


def _size(text: str | None) -> list[int] | None:
    """``--input-size WxH``: two positive integers."""
    values = _numbers(text, 2, "--input-size", "x", positive=True)
    if values is not None and not all(v == int(v) and v <= MAX_INPUT_SIDE for v in values):
        raise PoseforgeError(f"--input-size: expected WIDTHxHEIGHT in pixels (integers up to {MAX_INPUT_SIDE}), "
                             f"got {text!r}")
    return None if values is None else [int(v) for v in values]


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _plan(files: list[Path], out: Path, draw: bool) -> tuple[Path, dict[Path, Path]]:
    """The predictions file and the drawn output of each input file."""
    from .pipeline import is_video

    drawn = {f: out / (f.stem + ".mp4" if is_video(f) else f.name) for f in files} if draw else {}
    return out / "predictions.json", drawn


def _check_outputs(outputs: list[Path], inputs: list[Path], force: bool) -> None:
    for o in outputs:
        for i in inputs:
            if _same(o, i):
                raise PoseforgeError(f"{o}: the output would overwrite the input {i}; choose another --out")
    if not force:
        for o in outputs:
            if o.exists():
                raise PoseforgeError(f"{o}: exists (pass --force to replace it)")


def _write_image(path: Path, image: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise PoseforgeError(f"{path}: OpenCV cannot encode a {path.suffix} image")
    data.tofile(str(path))


def run(args: argparse.Namespace) -> int:
    """The command on parsed arguments (errors raise :class:`PoseforgeError`; :func:`main` prints them)."""
    from .drawing import draw_poses
    from .pipeline import BottomUpPipeline, list_inputs, load_pipeline

    import cv2

    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise PoseforgeError(f"--threads: expected a number of threads in 1..{MAX_THREADS}, got {args.threads}")
    for name in ("boxes_threshold", "keypoint_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise PoseforgeError(f"--{name.replace('_', '-')}: expected a number in [0, 1], got {getattr(args, name)}")
    if args.split_ratio is not None and not (math.isfinite(args.split_ratio) and args.split_ratio > 0):
        raise PoseforgeError(f"--split-ratio: expected a positive number, got {args.split_ratio}")
    size = _size(args.input_size)
    mean, std = _numbers(args.mean, 3, "--mean"), _numbers(args.std, 3, "--std", positive=True)
    source = Path(args.input)
    files = list_inputs(source)
    out = Path(args.out) if args.out else Path.cwd() / f"{source.resolve().name or 'input'}-poses"
    if out.exists() and not out.is_dir():
        raise PoseforgeError(f"{out}: exists and is not a folder")
    predictions, drawn = _plan(files, out, not args.no_draw)
    models = [Path(args.model)] + ([Path(args.detector)] if args.detector else [])
    _check_outputs([predictions, *drawn.values()], files + models, args.force)

    pipeline = load_pipeline(args.model, args.detector, num_threads=args.threads, flip_test=args.flip_test,
                             score_threshold=args.boxes_threshold, input_size=size, mean=mean, std=std,
                             split_ratio=args.split_ratio, codec=args.codec)
    meta = pipeline.model.meta
    if args.flip_test and isinstance(pipeline, BottomUpPipeline):
        raise PoseforgeError("--flip-test applies to top-down models")
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    writer, writer_source = None, None
    persons, started = 0, time.perf_counter()
    try:
        for frame, result in pipeline.stream(files):
            persons += len(result)
            record: dict[str, Any] = {"file_name": frame.source.name}
            if frame.fps is not None:
                record["frame"] = frame.index
            record.update(width=int(frame.image.shape[1]), height=int(frame.image.shape[0]), persons=result.to_json())
            records.append(record)
            if frame.source not in drawn:
                continue
            picture = draw_poses(frame.image, result, meta.keypoints.skeleton, threshold=args.keypoint_threshold)
            if frame.fps is None:
                _write_image(drawn[frame.source], picture)
                continue
            if writer_source != frame.source:  # a new video: a new writer (the frames stream through)
                if writer is not None:
                    writer.release()
                h, w = picture.shape[:2]
                writer = cv2.VideoWriter(str(drawn[frame.source]), cv2.VideoWriter_fourcc(*"mp4v"), frame.fps, (w, h))
                if not writer.isOpened():
                    raise PoseforgeError(f"{drawn[frame.source]}: OpenCV cannot write an mp4 video here")
                writer_source = frame.source
            writer.write(picture)
    finally:
        if writer is not None:
            writer.release()
    document = {"model": meta.model, "kind": meta.kind, "keypoints": list(meta.keypoints.names),
                "skeleton": [list(p) for p in meta.keypoints.skeleton], "bbox_format": "xyxy", "images": records}
    tmp = predictions.with_name(predictions.name + ".tmp")
    tmp.write_text(json.dumps(document))
    os.replace(tmp, predictions)  # a complete file or the old one, never half a file
    seconds = time.perf_counter() - started
    print(f"{len(records)} image(s) / frame(s), {persons} person(s) in {seconds:.1f} s -> {predictions}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``poseforge-rt`` command; returns the exit code (0 done, 2 error)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help (0) or a usage error (2, already printed on one line)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        return run(args)
    except PoseforgeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"{PROG}: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # onnxruntime / OpenCV failures on odd inputs: still one line, never a traceback
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"{PROG}: error: {type(e).__name__}: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
