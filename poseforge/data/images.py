"""Image decoding: every image becomes an ``H x W x 3`` uint8 RGB array, or a one-line :class:`DataError`.

OpenCV does the decoding (``IMREAD_COLOR``, as mmpose's default backend does): grayscale images are
expanded to three channels, alpha is dropped, 16-bit images are reduced to 8 bits and the EXIF
orientation is applied. Bytes are read by Python first, so a missing file, a directory, an empty file
and undecodable bytes each get their own message instead of OpenCV's silent ``None``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["load_image", "decode_image_bytes"]


def decode_image_bytes(data: bytes | bytearray | memoryview | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, BMP, TIFF, WebP ...) into an ``[H, W, 3]`` uint8 RGB array.

    Args:
        data: the encoded file content.
        name: what to call the image in error messages (usually its path).

    Raises:
        DataError: empty, corrupt or unsupported data; the message names ``name``.
    """
    import cv2  # on first decode: OpenCV is slow to import and predicting on arrays needs none

    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buffer.size == 0:
        raise DataError(f"{name}: empty file, expected an image")
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as e:  # some codecs raise instead of returning None
        raise DataError(f"{name}: cannot decode image ({str(e).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise DataError(f"{name}: cannot decode image (corrupt, truncated or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an ``[H, W, 3]`` uint8 RGB array (contiguous).

    Raises:
        DataError: the file is missing, is a directory, cannot be read, is empty or is not a decodable
            image; the one-line message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an image file") from None
    except OSError as e:
        if path.is_dir():  # Windows reports a directory as PermissionError
            raise DataError(f"{path}: is a directory, expected an image file") from None
        if isinstance(e, PermissionError):
            raise DataError(f"{path}: permission denied reading the image") from None
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    return decode_image_bytes(data, str(path))
