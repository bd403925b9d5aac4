"""Video input and output: files through PyAV (``pip install poseforge[video]``), webcams through OpenCV.

Frames are ``H x W x 3`` uint8 RGB numpy arrays everywhere. :class:`VideoReader` yields
:class:`VideoFrame` records (index, timestamp in seconds, pixels); :class:`VideoWriter` encodes RGB
frames to a file (H.264 when the PyAV build has it, else MPEG-4 Part 2) and moves it into place only
when closed, so a crash never leaves a truncated video under the final name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError, PoseforgeError

__all__ = ["VIDEO_SUFFIXES", "require_av", "VideoFrame", "VideoReader", "VideoWriter", "webcam_frames", "is_video_file"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")


def require_av():
    """The ``av`` module, or a one-line :class:`PoseforgeError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise PoseforgeError("video files need PyAV: pip install 'poseforge[video]' (or pip install av)") from None
    return av


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` from 0, ``timestamp`` in seconds, ``image`` H x W x 3 uint8 RGB."""

    index: int
    timestamp: float
    image: np.ndarray


class VideoReader:
    """Decode a video file frame by frame (``for frame in VideoReader(path)``).

    Attributes after opening: ``fps`` (average frame rate, 0 when unknown), ``size`` (w, h),
    ``num_frames`` (from the container; 0 when it does not say).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        av = require_av()
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        try:
            self._container = av.open(str(self.path))
        except Exception as e:  # PyAV raises its own error types (InvalidDataError, ...)
            raise DataError(f"{self.path}: cannot open video ({_first_line(e)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise DataError(f"{self.path}: no video stream in the file")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.size = (int(self._stream.codec_context.width), int(self._stream.codec_context.height))
        self.num_frames = int(self._stream.frames or 0)

    def __iter__(self) -> Iterator[VideoFrame]:
        index = 0
        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is not None and frame.time_base is not None:
                    timestamp = float(frame.pts * frame.time_base)
                else:
                    timestamp = index / self.fps if self.fps else float(index)
                yield VideoFrame(index, timestamp, frame.to_ndarray(format="rgb24"))
                index += 1
        except Exception as e:  # a corrupt packet mid-file: stop with a clear message
            if isinstance(e, (GeneratorExit, KeyboardInterrupt)):
                raise
            raise DataError(f"{self.path}: frame {index}: cannot decode ({_first_line(e)})") from None
        finally:
            self.close()

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Encode RGB frames into a video file (written beside the target, renamed on :meth:`close`).

    Args:
        path: output file (``.mp4`` recommended).
        fps: frame rate.
        codec: ``"auto"`` (libx264 if available, else mpeg4) or an FFmpeg encoder name.
        quality: CRF for H.264 (lower = better), ignored by other encoders.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, codec: str = "auto", quality: int = 20) -> None:
        self.av = require_av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        if codec == "auto":
            codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
        self.codec = codec
        self.fps = Fraction(fps).limit_denominator(1001) if fps and fps > 0 else Fraction(25)
        self.quality = int(quality)
        self._container = None
        self._stream = None
        self.frames_written = 0

    def _open(self, width: int, height: int) -> None:
        self._container = self.av.open(str(self.tmp), mode="w")
        self._stream = self._container.add_stream(self.codec, rate=self.fps)
        # yuv420p needs even sizes: odd frames are padded by one pixel
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            self._stream.options = {"crf": str(self.quality), "preset": "veryfast"}
        else:
            self._stream.bit_rate = max(1_000_000, int(width * height * float(self.fps) * 0.3))

    def write(self, image: np.ndarray) -> None:
        """Append one ``H x W x 3`` uint8 RGB frame (all frames must have the first frame's size)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise PoseforgeError(f"{self.path}: expected H x W x 3 uint8 RGB frames, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if self._container is None:
            self._open(w, h)
            self._size = (w, h)
        elif (w, h) != self._size:
            raise PoseforgeError(f"{self.path}: frame {self.frames_written} is {w}x{h}, the video is {self._size[0]}x{self._size[1]}")
        if w % 2 or h % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file into place."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Stop without producing the file."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def webcam_frames(index: int = 0, max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Frames from a camera through OpenCV (``cv2.VideoCapture(index)``) until it stops or ``max_frames``."""
    import time

    import cv2

    try:  # OpenCV logs its backend probing on stderr; the error below says what matters
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - older OpenCV builds
        pass
    capture = cv2.VideoCapture(int(index))
    if not capture.isOpened():
        raise PoseforgeError(f"webcam {index}: cannot open the camera")
    start = time.monotonic()
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            yield VideoFrame(count, time.monotonic() - start, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            count += 1
    finally:
        capture.release()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
