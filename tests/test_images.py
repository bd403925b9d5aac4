"""Image decoding: RGB uint8 out of every common format, one-line errors naming the file."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from poseforge.data.images import decode_image_bytes, load_image
from poseforge.errors import DataError


def _one_line_naming(excinfo, name: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and name in message, message


def test_real_jpeg_is_rgb(peer_data):
    path = peer_data / "coco" / "000000196141.jpg"
    image = load_image(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image.dtype == np.uint8 and image.shape == bgr.shape and image.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(image, bgr[..., ::-1])


def test_png_color_gray_alpha_and_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "color.png"), rgb[..., ::-1])
    np.testing.assert_array_equal(load_image(tmp_path / "color.png"), rgb)

    gray = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = load_image(tmp_path / "gray.png")
    assert out.shape == (9, 7, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, 2))

    bgra = np.concatenate([rgb[..., ::-1], rng.integers(0, 256, (12, 17, 1), dtype=np.uint8)], 2)
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    np.testing.assert_array_equal(load_image(tmp_path / "alpha.png"), rgb)

    deep = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    out = load_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, (deep >> 8).astype(np.uint8)[..., ::-1])


def test_decode_bytes_round_trip():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    np.testing.assert_array_equal(decode_image_bytes(encoded.tobytes(), "x.png"), rgb)
    np.testing.assert_array_equal(decode_image_bytes(encoded, "x.png"), rgb)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match="image file not found") as e:
        load_image(tmp_path / "nope.jpg")
    _one_line_naming(e, "nope.jpg")


def test_directory_names_the_directory(tmp_path):
    folder = tmp_path / "images.jpg"
    folder.mkdir()
    with pytest.raises(DataError, match="is a directory") as e:
        load_image(folder)
    _one_line_naming(e, "images.jpg")


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"this is not an image at all", "cannot decode image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "cannot decode image"),  # a JPEG header and nothing valid after it
])
def test_corrupt_files_name_the_file(tmp_path, content, problem):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(DataError, match=problem) as e:
        load_image(path)
    _one_line_naming(e, "broken.jpg")


def test_decode_error_uses_the_given_name():
    with pytest.raises(DataError) as e:
        decode_image_bytes(b"garbage", "s3://bucket/key.png")
    _one_line_naming(e, "s3://bucket/key.png")
