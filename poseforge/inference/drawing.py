"""Drawing: skeleton overlays, contact sheets and colourized dense maps (part, depth, normal).

Everything takes and returns ``H x W x 3`` uint8 RGB numpy arrays and never modifies its inputs.
Colours for keypoints and links come from the keypoint set, so any set draws the same way everywhere.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set

__all__ = ["draw_pose", "contact_sheet", "colorize_parts", "colorize_depth", "colorize_normals", "part_palette",
           "draw_result", "track_color", "put_label", "add_banner"]


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise PoseforgeError(f"{name}: expected an H x W x 3 RGB array, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise PoseforgeError(f"{name}: expected uint8 pixels, got {image.dtype}")
    return image


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    keypoint_set: "str | KeypointSet",
    boxes: np.ndarray | None = None,
    threshold: float = 0.3,
    *,
    occluded_below: float | None = None,
    radius: int | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw instances' skeletons on a copy of ``image``.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        keypoints: ``[N, K, 2]`` (or ``[K, 2]`` for one instance) pixel coordinates.
        scores: ``[N, K]`` keypoint scores, or COCO visibility flags (0, 1, 2).
        keypoint_set: the set (name or object) giving the skeleton and colours.
        boxes: optional ``[N, 4]`` ``(x, y, w, h)`` boxes.
        threshold: draw a keypoint (and its links) only when its score is above this.
        occluded_below: keypoints with a score above ``threshold`` but below this are drawn
            hollow (e.g. 1.5 with visibility flags: occluded points hollow, visible ones filled).
        radius, thickness: in pixels; default scales with the image size.
    """
    ks = get_keypoint_set(keypoint_set)
    out = _check_image(image).copy()
    kps = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if kps.ndim == 2:
        kps, sc = kps[None], sc[None]
    if kps.ndim != 3 or kps.shape[-1] != 2 or kps.shape[1] != ks.num_keypoints or sc.shape != kps.shape[:2]:
        raise PoseforgeError(f"draw_pose: expected keypoints [N, {ks.num_keypoints}, 2] and scores [N, {ks.num_keypoints}], "
                             f"got {tuple(kps.shape)} and {tuple(sc.shape)}")
    size = max(out.shape[0], out.shape[1])
    r = radius if radius is not None else max(1, int(round(size / 160)))
    th = thickness if thickness is not None else max(1, int(round(size / 320)))
    if ks.num_keypoints > 17:  # dense face/hand points: smaller dots
        r = radius if radius is not None else max(1, r // 2)
    if boxes is not None:
        for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            x, y, w, h = box
            cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), (255, 255, 255), th,
                          cv2.LINE_AA)
    shown = sc > threshold
    for n in range(kps.shape[0]):
        pts = np.round(kps[n]).astype(np.int64)
        for (a, b), color in zip(ks.skeleton, ks.link_colors):
            if shown[n, a] and shown[n, b]:
                cv2.line(out, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), tuple(int(c) for c in color), th,
                         cv2.LINE_AA)
        for k in np.flatnonzero(shown[n]):
            hollow = occluded_below is not None and sc[n, k] < occluded_below
            cv2.circle(out, tuple(int(v) for v in pts[k]), r, tuple(int(c) for c in ks.keypoint_colors[k]),
                       max(1, th) if hollow else -1, cv2.LINE_AA)
    return out


def contact_sheet(images: Sequence[np.ndarray], cols: int, labels: Sequence[str] | None = None, *, pad: int = 2,
                  background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Tile images into a grid (``cols`` per row). Images of other sizes are letterboxed into the
    largest one's cell; ``labels`` are written in each cell's top-left corner."""
    if not images:
        raise PoseforgeError("contact_sheet: no images")
    if cols < 1:
        raise PoseforgeError(f"contact_sheet: cols must be >= 1, got {cols}")
    if labels is not None and len(labels) != len(images):
        raise PoseforgeError(f"contact_sheet: {len(labels)} labels for {len(images)} images")
    imgs = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    ch = max(im.shape[0] for im in imgs)
    cw = max(im.shape[1] for im in imgs)
    rows = (len(imgs) + cols - 1) // cols
    sheet = np.empty((rows * ch + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), dtype=np.uint8)
    sheet[:] = np.asarray(background, dtype=np.uint8)
    for i, im in enumerate(imgs):
        s = min(ch / im.shape[0], cw / im.shape[1])
        if s != 1.0:
            im = cv2.resize(im, (max(1, int(round(im.shape[1] * s))), max(1, int(round(im.shape[0] * s)))),
                            interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        r, c = divmod(i, cols)
        y0 = pad + r * (ch + pad) + (ch - im.shape[0]) // 2
        x0 = pad + c * (cw + pad) + (cw - im.shape[1]) // 2
        sheet[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
        if labels is not None and labels[i]:
            scale = max(0.3, ch / 600)
            org = (pad + c * (cw + pad) + 3, pad + r * (ch + pad) + int(14 * scale / 0.45))
            cv2.putText(sheet, str(labels[i]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(sheet, str(labels[i]), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet


def part_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours: black for class 0, well-separated hues for the rest."""
    golden = 0.618033988749895
    hues = (np.arange(num_classes) * golden) % 1.0
    sat = 0.55 + 0.4 * ((np.arange(num_classes) * 7) % 3) / 2
    val = 0.75 + 0.25 * ((np.arange(num_classes) * 5) % 2)
    hsv = np.stack([hues * 180, sat * 255, val * 255], axis=-1).astype(np.uint8)[None]
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    rgb[0] = 0
    return rgb


def colorize_parts(part_map: np.ndarray, num_classes: int = 28) -> np.ndarray:
    """Body-part class map ``[H, W]`` (ints) -> RGB with :func:`part_palette` (class 0 black)."""
    part_map = np.asarray(part_map)
    if part_map.ndim != 2:
        raise PoseforgeError(f"colorize_parts: expected an [H, W] class map, got shape {tuple(part_map.shape)}")
    if part_map.size and (part_map.min() < 0 or part_map.max() >= num_classes):
        raise PoseforgeError(f"colorize_parts: classes must be in [0, {num_classes}), got {part_map.min()}..{part_map.max()}")
    return part_palette(num_classes)[part_map.astype(np.int64)]


def colorize_depth(depth: np.ndarray, mask: np.ndarray | None = None, *, near: float | None = None,
                   far: float | None = None) -> np.ndarray:
    """Depth ``[H, W]`` -> RGB (near bright, far dark; inferno), black outside ``mask``.

    ``mask`` defaults to the pixels with a positive finite depth; the range defaults to the 1st-99th
    percentile of the depth inside the mask.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise PoseforgeError(f"colorize_depth: expected an [H, W] depth map, got shape {tuple(depth.shape)}")
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    out = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return out
    vals = depth[valid]
    lo = float(np.percentile(vals, 1)) if near is None else near
    hi = float(np.percentile(vals, 99)) if far is None else far
    scaled = 1.0 - np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    gray = np.round(scaled * 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    out[valid] = colored[valid]
    return out


def colorize_normals(normals: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Unit normals ``[H, W, 3]`` -> RGB ``(n + 1) / 2 * 255``, black outside ``mask`` (default: non-zero normals)."""
    normals = np.asarray(normals, dtype=np.float64)
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise PoseforgeError(f"colorize_normals: expected an [H, W, 3] normal map, got shape {tuple(normals.shape)}")
    valid = np.abs(normals).sum(axis=2) > 0
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    out = np.zeros(normals.shape, dtype=np.uint8)
    out[valid] = np.round((np.clip(normals[valid], -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------- predictions
def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per track id (golden-ratio hues); grey for -1 (untracked)."""
    if track_id < 0:
        return (230, 230, 230)
    hue = (int(track_id) * 0.618033988749895 + 0.1) % 1.0
    hsv = np.array([[[hue * 180, 200, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def put_label(image: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int], *,
              scale: float | None = None, text_color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Write ``text`` on a filled ``color`` tag whose bottom-left corner is ``org`` (in place; returns ``image``).
    The tag moves inside the image when it would leave it."""
    h, w = image.shape[:2]
    scale = scale if scale is not None else max(0.35, min(h, w) / 900)
    thickness = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(min(max(org[0], 0), max(w - tw - 4, 0)))
    y = int(min(max(org[1], th + base + 2), h - 1))
    cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 4, y), tuple(int(c) for c in color), -1)
    if text_color is None:  # dark text on light tags, white on dark ones
        text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, text_color, thickness, cv2.LINE_AA)
    return image


def draw_result(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    keypoint_set: "str | KeypointSet",
    boxes: np.ndarray | None = None,
    box_scores: np.ndarray | None = None,
    track_ids: np.ndarray | None = None,
    threshold: float = 0.3,
    *,
    labels: bool = True,
    color_by_index: bool = False,
    radius: int | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw predictions on a copy of ``image``: outlined skeletons in the keypoint set's colours, boxes
    ``[N, 4]`` (x1, y1, x2, y2) coloured by track id, and tags with the id and box score.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        keypoints, scores: ``[N, K, 2]`` pixels and ``[N, K]`` scores.
        keypoint_set: the set giving the skeleton and colours.
        boxes, box_scores, track_ids: optional per-instance boxes (xyxy), scores and ids (-1 = none).
        threshold: draw a keypoint (and its links) only when its score is above this.
        labels: write the tags.
        color_by_index: colour untracked boxes by their position in the list (still images).
    """
    ks = get_keypoint_set(keypoint_set)
    out = _check_image(image).copy()
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, ks.num_keypoints, 2)
    sc = np.asarray(scores, dtype=np.float64).reshape(kps.shape[0], ks.num_keypoints)
    n = kps.shape[0]
    ids = np.full(n, -1, dtype=np.int64) if track_ids is None else np.asarray(track_ids, dtype=np.int64).reshape(n)
    size = max(out.shape[0], out.shape[1])
    r = radius if radius is not None else max(2, int(round(size / 180)))
    th = thickness if thickness is not None else max(1, int(round(size / 300)))
    if ks.num_keypoints > 17:
        r = radius if radius is not None else max(1, r // 2)
    if boxes is not None:
        bxs = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
        for i in range(n):
            color = track_color(i if (color_by_index and ids[i] < 0) else int(ids[i]))
            p1 = (int(round(bxs[i, 0])), int(round(bxs[i, 1])))
            p2 = (int(round(bxs[i, 2])), int(round(bxs[i, 3])))
            cv2.rectangle(out, p1, p2, color, th, cv2.LINE_AA)
            if labels:
                parts = [f"#{ids[i]}"] if ids[i] >= 0 else []
                if box_scores is not None:
                    parts.append(f"{float(np.asarray(box_scores).reshape(-1)[i]):.2f}")
                if parts:
                    put_label(out, " ".join(parts), (p1[0], p1[1]), color)
    shown = sc > threshold
    pts = np.round(kps).astype(np.int64)
    # dark outlines first so the skeleton reads on any background, then the colours
    for n_i in range(n):
        for a, b in ks.skeleton:
            if shown[n_i, a] and shown[n_i, b]:
                cv2.line(out, tuple(int(v) for v in pts[n_i, a]), tuple(int(v) for v in pts[n_i, b]), (20, 20, 20), th + 2,
                         cv2.LINE_AA)
    for n_i in range(n):
        for (a, b), color in zip(ks.skeleton, ks.link_colors):
            if shown[n_i, a] and shown[n_i, b]:
                cv2.line(out, tuple(int(v) for v in pts[n_i, a]), tuple(int(v) for v in pts[n_i, b]),
                         tuple(int(c) for c in color), th, cv2.LINE_AA)
        for k in np.flatnonzero(shown[n_i]):
            cv2.circle(out, tuple(int(v) for v in pts[n_i, k]), r + 1, (20, 20, 20), -1, cv2.LINE_AA)
            cv2.circle(out, tuple(int(v) for v in pts[n_i, k]), r, tuple(int(c) for c in ks.keypoint_colors[k]), -1,
                       cv2.LINE_AA)
    return out


def add_banner(image: np.ndarray, text: str, *, height: int | None = None,
               background: tuple[int, int, int] = (24, 24, 28)) -> np.ndarray:
    """``image`` with a strip of ``text`` above it (a title for sheets and videos)."""
    image = _check_image(image)
    h = height if height is not None else max(22, image.shape[1] // 30)
    strip = np.empty((h, image.shape[1], 3), dtype=np.uint8)
    strip[:] = np.asarray(background, dtype=np.uint8)
    scale = h / 40
    thickness = max(1, int(round(scale * 1.6)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    room = image.shape[1] - int(h * 0.8)
    if tw > room:  # shrink long titles to fit the width
        scale *= room / tw
        thickness = max(1, int(round(scale * 1.6)))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.putText(strip, text, (int(h * 0.4), (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (240, 240, 240), thickness,
                cv2.LINE_AA)
    return np.concatenate([strip, image], axis=0)
