"""Exact labels from the rendered geometry: keypoints, visibility by a depth test, boxes, masks.

Conventions (the same as poseforge's COCO reader):

* keypoints are pixel coordinates with pixel centres at integers (the pixel containing keypoint
  ``(x, y)`` is ``(round(x), round(y))``);
* visibility is COCO's: 0 = outside the image, or a joint of the set the figure does not model
  (``sapiens308``'s face points: :func:`expand_labels`), coordinates set to 0 as COCO does for
  unlabeled points; 1 = inside the image but occluded, 2 = visible;
* a keypoint is *visible* when the first surface along the camera ray through it (any figure, prop,
  wall or floor) is no more than its ``slack`` in front of it -- the joint's own depth inside the limb
  for joint centres (e.g. ~17 cm for a hip, ~6 cm for an elbow), about 1 cm for surface points --
  and the figure is drawn at one of the 2 x 2 pixels whose centres surround the point (so a
  sub-pixel ear of a tiny figure that no pixel shows is not called visible);
* the box is COCO's ``[x, y, w, h]`` of the visible instance mask (``x = first column``,
  ``w = last - first + 1``) and ``area`` is the mask's pixel count.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import PoseforgeError
from .classes import SAPIENS_PART_CLASSES
from .ops import matvec3
from .render import RenderOutput, cast_rays, plane_depths
from .scene import SceneBatch
from .shapes import NEAR, CameraPrims

__all__ = ["LabelBatch", "compute_labels", "expand_labels", "KEYPOINT_PARTS", "keypoint_parts", "mask_to_rle"]


@dataclass
class LabelBatch:
    """Labels for a rendered batch ([B,P] figure slots, K keypoints of the requested set).

    ``keypoints`` [B,P,K,2] float32 (0 where visibility is 0), ``visibility`` [B,P,K] float32,
    ``keypoints_cam`` [B,P,K,3] camera-space points (metres, OpenCV axes) for every keypoint the
    figure models (0 for the set's other joints),
    ``slack`` [B,P,K] metres, ``bbox`` [B,P,4] xywh, ``area`` [B,P] float32 (mask pixels),
    ``present`` [B,P] slots that hold a figure with at least one visible pixel.
    """

    keypoints: Tensor
    visibility: Tensor
    keypoints_cam: Tensor
    slack: Tensor
    bbox: Tensor
    area: Tensor
    present: Tensor


def compute_labels(scene: SceneBatch, out: RenderOutput, cam: CameraPrims, keypoint_index: Tensor) -> LabelBatch:
    """Project the figures' keypoints ``keypoint_index`` (indices into the figure's full list),
    decide visibility against the rendered scene and measure boxes and areas from the instance map."""
    inputs = scene.inputs
    B, P = scene.valid.shape
    H, W = inputs.height, inputs.width
    device = inputs.intr.device
    kw = scene.keypoints[:, :, keypoint_index]  # [B,P,K,3]
    slack = scene.slack[:, :, keypoint_index]
    K = kw.shape[2]
    pc = matvec3(inputs.cam_R[:, None, None], kw) + inputs.cam_t[:, None, None]
    z = pc[..., 2]
    zc = torch.clamp(z, min=NEAR)
    fx, fy, cx, cy = (f[:, None, None] for f in inputs.intr.unbind(-1))
    u = pc[..., 0] / zc * fx + cx  # continuous coordinates: pixel centres at integer + 0.5
    v = pc[..., 1] / zc * fy + cy
    inside = (z > NEAR) & (u >= 0) & (u < W) & (v >= 0) & (v < H) & scene.valid[..., None]

    # Depth test: one exact ray per labelled keypoint against every primitive and plane of its image.
    sel = torch.nonzero(inside.reshape(-1)).squeeze(1)
    image_of = torch.arange(B, device=device).repeat_interleave(P * K)[sel]
    uv = torch.stack([u.reshape(-1)[sel], v.reshape(-1)[sel]], dim=-1)
    t_prim, _ = cast_rays(inputs.prims, cam, image_of, uv, B)
    t_plane, _ = plane_depths(inputs, image_of, uv)
    t_first = torch.minimum(t_prim, t_plane)
    seen = t_first >= z.reshape(-1)[sel] - slack.reshape(-1)[sel]
    # ... and the figure must actually be drawn there: one of the 2 x 2 pixels whose centres surround
    # the point shows it (a sub-pixel ear of a tiny figure that no pixel samples is not visible).
    me = (torch.arange(P, device=device) + 1).repeat_interleave(K).repeat(B)[sel]
    x0 = torch.floor(uv[:, 0] - 0.5).to(torch.int64)
    y0 = torch.floor(uv[:, 1] - 0.5).to(torch.int64)
    inst = out.instance.to(torch.int64)
    drawn = torch.zeros_like(seen)
    for dy in (0, 1):
        for dx in (0, 1):
            xx = torch.clamp(x0 + dx, 0, W - 1)
            yy = torch.clamp(y0 + dy, 0, H - 1)
            drawn |= inst[image_of, yy, xx] == me
    seen = seen & drawn
    vis_flat = torch.zeros(B * P * K, device=device)
    vis_flat[sel] = torch.where(seen, 2.0, 1.0)
    visibility = vis_flat.reshape(B, P, K)
    keypoints = torch.stack([u - 0.5, v - 0.5], dim=-1) * (visibility > 0)[..., None]

    # Boxes and areas from the instance map (vectorized over all images and figures).
    # Only figure pixels are visited (found on the uint8 map), so no full-frame int64 arrays are built.
    flat = out.instance.reshape(-1)
    keep = torch.nonzero(flat).squeeze(1)
    image = torch.div(keep, H * W, rounding_mode="floor")
    pix = keep - image * (H * W)
    slot = image * P + flat.index_select(0, keep).to(torch.int64) - 1
    rows = torch.div(pix, W, rounding_mode="floor")
    cols = pix - rows * W
    area = torch.bincount(slot, minlength=B * P).to(torch.float32)
    big = max(H, W) + 1
    x0 = torch.full((B * P,), big, dtype=torch.int64, device=device).scatter_reduce(0, slot, cols, "amin")
    y0 = torch.full((B * P,), big, dtype=torch.int64, device=device).scatter_reduce(0, slot, rows, "amin")
    x1 = torch.full((B * P,), -1, dtype=torch.int64, device=device).scatter_reduce(0, slot, cols, "amax")
    y1 = torch.full((B * P,), -1, dtype=torch.int64, device=device).scatter_reduce(0, slot, rows, "amax")
    present = (area > 0) & scene.valid.reshape(-1)
    bbox = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dim=-1).to(torch.float32)
    bbox = torch.where(present[:, None], bbox, 0.0)
    return LabelBatch(
        keypoints=keypoints.to(torch.float32),
        visibility=visibility,
        keypoints_cam=pc,
        slack=slack,
        bbox=bbox.reshape(B, P, 4),
        area=area.reshape(B, P),
        present=present.reshape(B, P),
    )


def expand_labels(labels: LabelBatch, target_index: Tensor, num_keypoints: int) -> LabelBatch:
    """``labels`` of some joints placed at ``target_index`` of a ``num_keypoints`` set; every other
    joint is unlabeled: visibility, coordinates, camera point and slack all 0."""
    B, P, K = labels.visibility.shape
    if target_index.shape != (K,):
        raise PoseforgeError(f"expand_labels: {K} labelled keypoints but {tuple(target_index.shape)} target indices")

    def spread(x: Tensor) -> Tensor:
        out = x.new_zeros((B, P, num_keypoints) + tuple(x.shape[3:]))
        out[:, :, target_index] = x
        return out

    return LabelBatch(keypoints=spread(labels.keypoints), visibility=spread(labels.visibility),
                      keypoints_cam=spread(labels.keypoints_cam), slack=spread(labels.slack), bbox=labels.bbox,
                      area=labels.area, present=labels.present)


def _body_part_table() -> dict[str, tuple[str, ...]]:
    """The body-part classes that may show at each human keypoint (for checks and for users)."""
    face = ("Face_Neck", "Upper_Lip", "Lower_Lip", "Upper_Teeth", "Lower_Teeth", "Tongue")
    # Ears sit at the hairline (and under hat brims): at pixel scale their neighbourhood is hair too.
    table: dict[str, tuple[str, ...]] = {
        "nose": face, "left_eye": face, "right_eye": face,
        "left_ear": ("Face_Neck", "Hair", "Apparel"), "right_ear": ("Face_Neck", "Hair", "Apparel"),
    }
    for side, cap in (("left", "Left"), ("right", "Right")):
        table[f"{side}_shoulder"] = (f"{cap}_Upper_Arm", "Upper_Clothing", "Torso")
        table[f"{side}_elbow"] = (f"{cap}_Upper_Arm", f"{cap}_Lower_Arm", "Upper_Clothing")
        table[f"{side}_wrist"] = (f"{cap}_Lower_Arm", f"{cap}_Hand", "Upper_Clothing")
        table[f"{side}_hip"] = (f"{cap}_Upper_Leg", "Lower_Clothing", "Upper_Clothing", "Torso")
        table[f"{side}_knee"] = (f"{cap}_Upper_Leg", f"{cap}_Lower_Leg", "Lower_Clothing", f"{cap}_Sock", f"{cap}_Shoe")
        table[f"{side}_ankle"] = (f"{cap}_Lower_Leg", f"{cap}_Foot", f"{cap}_Sock", f"{cap}_Shoe", "Lower_Clothing")
        for toe in ("big_toe", "small_toe", "heel"):
            table[f"{side}_{toe}"] = (f"{cap}_Foot", f"{cap}_Shoe", f"{cap}_Sock", "Lower_Clothing")
        table[f"{side}_hand_root"] = table[f"{side}_wrist"]
        for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"):
            for k in range(1, 5):
                table[f"{side}_{finger}{k}"] = (f"{cap}_Hand",)
            table[f"{side}_{finger}_third_joint"] = (f"{cap}_Hand",)  # Goliath's name for <finger>1
    for k in range(68):
        table[f"face_{k}"] = face
    return table


KEYPOINT_PARTS: dict[str, tuple[str, ...]] = _body_part_table()


def keypoint_parts(names: tuple[str, ...]) -> list[set[int]]:
    """For each keypoint name, the set of Sapiens class indices that may be seen on it."""
    idx = {n: i for i, n in enumerate(SAPIENS_PART_CLASSES)}
    return [{idx[c] for c in KEYPOINT_PARTS.get(n, ())} for n in names]


def mask_to_rle(mask: "np.ndarray") -> dict:
    """Encode a bool ``[H, W]`` mask as COCO's compressed RLE (``{"size": [H, W], "counts": str}``),
    the form pycocotools' ``mask.encode`` produces (column-major runs, starting with background)."""
    import numpy as np

    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    chars = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": [int(h), int(w)], "counts": "".join(chars)}
