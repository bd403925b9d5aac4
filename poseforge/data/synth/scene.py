"""Scenes: figures placed on a floor, a perspective camera framing them, rooms or outdoor grounds,
clutter, lighting. Everything is sampled batched from the counter-based RNG (image ``i`` depends on
``(seed, i)`` only) and ends in :class:`~.render.RenderInputs` plus the 3D keypoints to label.

Two framings: ``"crop"`` frames one figure so that it fills the image like a top-down crop (the
person-centric 256x192 training samples), ``"scene"`` frames a group of 1..N figures with random
distance, height, rotation and off-centre aim, so people overlap and get cut by the image border.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .body import MAT_SLOTS, compiled_human, hsv_to_rgb, material_rows, sample_humans
from .ops import cross3, dot3, matmul3, matvec3, normalize3, rot_y, sincos
from .render import NUM_MAT_FIELDS, PhotoInputs, RenderInputs
from .rng import Draws, Rng, choice_from
from .shapes import BOX, CONE, Prims
from .skeleton import build_prims

__all__ = ["SceneConfig", "SceneBatch", "build_scenes", "num_figures"]


@dataclass(frozen=True)
class SceneConfig:
    """What to render. ``figure``: ``"human"`` or ``"quadruped"``; ``framing``: ``"crop"``,
    ``"scene"`` or ``"auto"`` (crop when at most one figure per image)."""

    width: int
    height: int
    min_figures: int = 1
    max_figures: int = 4
    figure: str = "human"
    framing: str = "auto"
    clutter: bool = True
    photo_backgrounds: float = 0.0  # probability of a photo backdrop, and of a photo texture per surface (.photos)
    photo_clothing: float = 0.0  # probability of a photo print per garment of a person (.photos)
    facing_camera: float = 0.5  # share of figures whose front faces the camera (0.5: every heading equally likely)

    @property
    def crop(self) -> bool:
        return self.framing == "crop" or (self.framing == "auto" and self.max_figures == 1)


@dataclass
class SceneBatch:
    """A sampled batch: the renderer's inputs plus the figures' 3D keypoints.

    ``keypoints`` [B,P,K,3] world, ``slack`` [B,P,K] metres, ``valid`` [B,P] which figure slots are
    used, ``category`` [B,P] category ids (1 = person; AP-10K species ids for animals).
    """

    inputs: RenderInputs
    keypoints: Tensor
    slack: Tensor
    valid: Tensor
    category: Tensor


def num_figures(rng: Rng, config: SceneConfig) -> Tensor:
    """[B] number of figures in each image (cheap: no rendering)."""
    return rng.randint("scene/count", (), config.min_figures, config.max_figures + 1)


def _scene_draws(P: int, NB: int, NC: int, ND: int) -> list[tuple[str, int]]:
    """Every uniform a scene uses, in a fixed order (append new names at the end)."""
    names = [("scene/spacing", 1), ("scene/lat_jit", 4 * P), ("scene/depth_jit", 4 * P), ("scene/yaw", P),
             ("cam/fov", 1), ("cam/elev", 1), ("cam/az", 1), ("cam/roll", 4), ("cam/fill", 1), ("cam/shift_u", 4),
             ("cam/shift_v", 4), ("bg/outdoor", 1)]
    names += [(f"bg/floor_{k}", 1) for k in ("kind", "h", "s", "v", "size", "grain", "spec")]
    names += [(f"bg/wall_{k}", 2) for k in ("kind", "h", "s", "v", "c2", "size", "grain", "yaw")]
    names += [("bg/back_dist", 1), ("bg/side_sign", 1), ("bg/side_dist", 1), ("bg/has_side", 1)]
    names += [(f"clutter/{k}", NB) for k in ("box_ang", "box_rad", "bw", "bh", "bd", "box_on", "box_yaw")]
    names += [("clutter/occluder", 1), ("clutter/occ_at", 1), ("clutter/occ_x", 4), ("clutter/occ_z", 4), ("clutter/occ_h", 1)]
    names += [(f"clutter/{k}", NC) for k in ("c_ang", "c_rad", "c_kind", "c_r", "c_h", "c_h2", "c_rb", "c_on")]
    names += [(f"clutter/{k}", ND) for k in ("d_on", "d_x", "dw", "dh", "d_y")]
    for prefix, n in (("clutter/box_mat", NB), ("clutter/c_mat", NC), ("clutter/d_mat", ND), ("seat/mat", P)):
        names += [(f"{prefix}/{k}", n) for k in _MAT_DRAWS]
    names += [(f"light/{k}", 1) for k in ("el", "az", "warm", "key", "amb")]
    names += [(f"sky/{k}", 1) for k in ("h", "s", "v")]
    names += [(f"post/{k}", 1) for k in ("exposure", "blur_on", "blur", "noise")]
    return names


def _headings(u: Tensor, camera_az: Tensor, facing_camera: float) -> Tensor:
    """Figure headings (radians about +y) from uniforms ``u`` [B] or [B,P], in ``u``'s shape.

    A figure faces ``(sin h, 0, cos h)`` and the camera sits at azimuth ``camera_az`` [B] seen from the
    figures, so heading ``camera_az`` faces it. A share ``facing_camera`` of figures turn their front
    toward the camera (heading within 90 degrees of it), the rest away, uniformly within each half;
    0.5 is a uniform heading, drawn as before the option existed so that renders stay unchanged.
    """
    if not 0.0 <= facing_camera <= 1.0:
        raise ValueError(f"facing_camera must be within [0, 1], got {facing_camera}")
    if facing_camera == 0.5:
        return u * (2 * math.pi)
    f = facing_camera
    front = (u / max(f, 1e-12) - 0.5) * math.pi  # [-90, 90) degrees from the camera
    back = 0.5 * math.pi + (u - f) / max(1.0 - f, 1e-12) * math.pi  # [90, 270)
    return camera_az.reshape(-1, *(1,) * (u.dim() - 1)) + torch.where(u < f, front, back)


def _look_at(cam_pos: Tensor, target: Tensor, roll: Tensor) -> Tensor:
    """World->camera rotation [B,3,3] (OpenCV axes) looking from ``cam_pos`` at ``target``."""
    f = normalize3(target - cam_pos)
    up = torch.zeros_like(f)
    up[:, 1] = 1.0
    x = normalize3(cross3(f, up))
    y = cross3(f, x)
    s, c = sincos(roll)
    xr = x * c[:, None] + y * s[:, None]
    yr = y * c[:, None] - x * s[:, None]
    return torch.stack([xr, yr, f], dim=1)


def _project(points: Tensor, R: Tensor, t: Tensor, intr: Tensor) -> tuple[Tensor, Tensor]:
    """Project [B,M,3] world points: pixel coordinates [B,M,2] and camera z [B,M]."""
    pc = matvec3(R[:, None], points) + t[:, None]
    z = torch.clamp(pc[..., 2], min=1e-3)
    u = pc[..., 0] / z * intr[:, None, 0] + intr[:, None, 2]
    v = pc[..., 1] / z * intr[:, None, 1] + intr[:, None, 3]
    return torch.stack([u, v], dim=-1), pc[..., 2]


def _floor_material(d: Draws, outdoor: Tensor, device: torch.device) -> Tensor:
    """[B,F] floor materials: tiles, planks, carpet, concrete indoors; grass, asphalt, sand outside."""
    from .render import MAT_FIELDS as F

    B = d.values.shape[0]
    kind = d.randint("bg/floor_kind", 0, 4)
    hue, sat, val = d.u("bg/floor_h"), d.u("bg/floor_s"), d.u("bg/floor_v")
    base = hsv_to_rgb(hue, 0.05 + 0.45 * sat, 0.25 + 0.6 * val)
    wood = hsv_to_rgb(0.06 + 0.05 * hue, 0.4 + 0.3 * sat, 0.25 + 0.5 * val)
    grass = hsv_to_rgb(0.22 + 0.08 * hue, 0.4 + 0.4 * sat, 0.2 + 0.35 * val)
    gray = hsv_to_rgb(hue, 0.05 * sat, 0.25 + 0.45 * val)
    sand = hsv_to_rgb(0.1 + 0.03 * hue, 0.25 + 0.2 * sat, 0.55 + 0.35 * val)
    rows = torch.zeros(B, NUM_MAT_FIELDS, device=device)
    size = 0.3 + 0.7 * d.u("bg/floor_size")
    indoor_col = torch.where((kind == 1)[:, None], wood, base)
    outdoor_col = torch.where((kind <= 1)[:, None], grass, torch.where((kind == 2)[:, None], gray, sand))
    col = torch.where(outdoor[:, None], outdoor_col, indoor_col)
    rows[:, F["c1"]] = col
    rows[:, F["c2"]] = col * 0.55
    tiles = ~outdoor & (kind == 0)
    planks = ~outdoor & (kind == 1)
    freq = 1.0 / size
    zero = torch.zeros_like(freq)
    rows[:, F["k1"]] = torch.where((tiles | planks)[:, None], torch.stack([zero, freq * torch.where(planks, 5.0, 1.0), zero], -1), 0.0)
    rows[:, F["duty1"]] = torch.where(planks, 0.06, 0.04)
    rows[:, F["w1"]] = torch.where(tiles | planks, 1.0, 0.0)
    rows[:, F["k2"]] = torch.where(tiles[:, None], torch.stack([freq, zero, zero], -1), 0.0)
    rows[:, F["duty2"]] = 0.04
    rows[:, F["w2"]] = torch.where(tiles, 1.0, 0.0)
    rows[:, F["cell_var"]] = torch.where(planks, 0.35, torch.where(tiles, 0.12, 0.0))
    rows[:, F["grain"]] = torch.where(outdoor, 0.25, 0.04 + 0.12 * d.u("bg/floor_grain"))
    rows[:, F["grain_freq"]] = torch.where(outdoor, 20.0, 25.0)
    rows[:, F["spec"]] = torch.where(outdoor, 0.0, 0.15 * d.u("bg/floor_spec"))
    return rows


def _wall_materials(d: Draws, n: int, device: torch.device) -> Tensor:
    """[B,n,F] wall materials: paint, wallpaper stripes, bricks/tiles."""
    from .render import MAT_FIELDS as F

    B = d.values.shape[0]
    kind = choice_from(d.u("bg/wall_kind"), (0.55, 0.2, 0.25))
    col = hsv_to_rgb(d.u("bg/wall_h"), 0.04 + 0.4 * d.u("bg/wall_s"),
                     0.45 + 0.5 * d.u("bg/wall_v"))
    col2 = col * (0.6 + 0.3 * d.u("bg/wall_c2"))[..., None]
    rows = torch.zeros(B, n, NUM_MAT_FIELDS, device=device)
    rows[..., F["c1"]] = col
    rows[..., F["c2"]] = col2
    size = 0.1 + 0.5 * d.u("bg/wall_size")
    zero = torch.zeros_like(size)
    stripes = kind == 1
    bricks = kind == 2
    rows[..., F["k1"]] = torch.where((stripes | bricks)[..., None], torch.stack([1.0 / size, zero, zero], -1), 0.0)
    rows[..., F["duty1"]] = torch.where(bricks, 0.06, 0.5)
    rows[..., F["w1"]] = torch.where(stripes, 0.6, torch.where(bricks, 1.0, 0.0))
    rows[..., F["k2"]] = torch.where(bricks[..., None], torch.stack([zero, 2.0 / size, zero], -1), 0.0)
    rows[..., F["duty2"]] = 0.12
    rows[..., F["w2"]] = torch.where(bricks, 1.0, 0.0)
    rows[..., F["cell_var"]] = torch.where(bricks, 0.2, 0.0)
    rows[..., F["grain"]] = 0.05 + 0.1 * d.u("bg/wall_grain")
    rows[..., F["grain_freq"]] = 60.0
    return rows


_MAT_DRAWS = ("h", "neutral", "s", "v", "pat", "patk", "freq", "grain", "spec")


def _random_materials(d: Draws, name: str) -> Tensor:
    """[B,n,F] random object materials (solid or striped, some saturated, some neutral)."""
    hue = d.u(f"{name}/h")
    neutral = d.u(f"{name}/neutral") < 0.4
    sat = torch.where(neutral, 0.08, 0.3 + 0.6 * d.u(f"{name}/s"))
    val = 0.15 + 0.8 * d.u(f"{name}/v")
    c1 = hsv_to_rgb(hue, sat, val)
    c2 = hsv_to_rgb(torch.remainder(hue + 0.3, 1.0), sat, 1.0 - 0.6 * val)
    pattern = torch.where(d.u(f"{name}/pat") < 0.75, 0, d.randint(f"{name}/patk", 1, 4))
    freq = 2.0 + 10.0 * d.u(f"{name}/freq")
    grain = 0.03 + 0.1 * d.u(f"{name}/grain")
    spec = 0.3 * d.u(f"{name}/spec")
    return material_rows(c1, c2, pattern, freq, grain, spec)


def _box_prims(image: Tensor, center: Tensor, half: Tensor, rot: Tensor, mat: Tensor, valid: Tensor) -> Prims:
    """Boxes with half extents ``half`` and orientation ``rot`` (flattened [M] inputs; invalid ones dropped)."""
    keep = torch.nonzero(valid).squeeze(1)
    image, center, half, rot, mat = image[keep], center[keep], half[keep], rot[keep], mat[keep]
    M = int(keep.shape[0])
    dev = center.device
    z3 = torch.zeros(M, 3, device=dev)
    z = torch.zeros(M, device=dev)
    zi = torch.zeros(M, dtype=torch.int64, device=dev)
    return Prims(image=image, kind=torch.full((M,), BOX, dtype=torch.int64, device=dev), rot=rot, scale=half,
                 pos=center, a=z3, b=z3, ra=z, rb=z, instance=zi, part=zi, mat=mat, layer_cls=torch.zeros(M, 2, dtype=torch.int64, device=dev),
                 layer_mat=torch.zeros(M, 2, dtype=torch.int64, device=dev), layer_lo=torch.zeros(M, 2, device=dev),
                 layer_hi=torch.zeros(M, 2, device=dev), s_axis=z3, s_off=z)


def _cone_prims(image: Tensor, a: Tensor, b: Tensor, ra: Tensor, rb: Tensor, mat: Tensor, valid: Tensor) -> Prims:
    """World-space round cones (flattened [M] inputs; invalid ones dropped)."""
    keep = torch.nonzero(valid).squeeze(1)
    image, a, b, ra, rb, mat = image[keep], a[keep], b[keep], ra[keep], rb[keep], mat[keep]
    M = int(keep.shape[0])
    dev = a.device
    eye = torch.eye(3, device=dev).expand(M, 3, 3)
    z3 = torch.zeros(M, 3, device=dev)
    z = torch.zeros(M, device=dev)
    zi = torch.zeros(M, dtype=torch.int64, device=dev)
    return Prims(image=image, kind=torch.full((M,), CONE, dtype=torch.int64, device=dev), rot=eye, scale=torch.ones(M, 3, device=dev),
                 pos=z3, a=a, b=b, ra=ra, rb=rb, instance=zi, part=zi, mat=mat,
                 layer_cls=torch.zeros(M, 2, dtype=torch.int64, device=dev), layer_mat=torch.zeros(M, 2, dtype=torch.int64, device=dev),
                 layer_lo=torch.zeros(M, 2, device=dev), layer_hi=torch.zeros(M, 2, device=dev), s_axis=z3, s_off=z)


_SIDE_CLASS_CACHE: dict[str, Tensor] = {}


def _side_class(device: torch.device) -> Tensor:
    """[3,C]: class index for centre/left/right parts (left classes map to right ones on the right)."""
    from .classes import SAPIENS_PART_CLASSES as names

    key = str(device)
    if key not in _SIDE_CLASS_CACHE:
        idx = {n: i for i, n in enumerate(names)}
        right = [idx.get("Right_" + n[5:], i) if n.startswith("Left_") else i for i, n in enumerate(names)]
        ident = list(range(len(names)))
        _SIDE_CLASS_CACHE[key] = torch.tensor([ident, ident, right], device=device)
    return _SIDE_CLASS_CACHE[key]


def build_scenes(config: SceneConfig, seed: int, indices: Tensor, device: torch.device) -> SceneBatch:
    """Sample and assemble a batch of scenes for image ``indices`` [B]."""
    if config.figure == "quadruped":
        from .quadruped import sample_quadrupeds as sample_figures, compiled_quadruped as compiled, QUAD_MAT_SLOTS as slots
    else:
        sample_figures, compiled, slots = sample_humans, compiled_human, MAT_SLOTS
    rng = Rng(seed, indices.to(device))
    B, P = rng.batch_size, config.max_figures
    NB, NC, ND = 6, 5, 3  # clutter boxes, round objects, wall decorations per image
    d = Draws(rng, "scene", (), _scene_draws(P, NB, NC, ND))
    N = B * P
    W, H = config.width, config.height
    fig = compiled(device)
    count = num_figures(rng, config)
    slot = torch.arange(P, device=device)
    valid = slot[None] < count[:, None]  # [B,P]
    params = sample_figures(rng, P, device)
    flat = lambda t: t.reshape(N, *t.shape[2:])

    # --- placement on the floor ---------------------------------------------------------------
    spacing = 0.5 + 0.5 * d.u("scene/spacing")
    lateral = (slot[None].float() - (count[:, None].float() - 1) * 0.5) * spacing[:, None]
    lateral = lateral + 0.25 * d.normals("scene/lat_jit")
    depth = 0.8 * d.normals("scene/depth_jit") * (count[:, None] > 1)
    if config.crop:
        lateral, depth = lateral * 0, depth * 0
    az = d.u("cam/az") * (2 * math.pi)  # the camera's azimuth: a figure with heading ``az`` faces it (_headings)
    yaw = _headings(d.u("scene/yaw"), az, config.facing_camera)
    root_pos = torch.stack([lateral, torch.zeros_like(lateral), depth], dim=-1)
    root_rot = rot_y(flat(yaw))
    root_rot = matmul3(root_rot, params.root_pose)
    pose = fig.forward_kinematics(params.local_rot, params.gscale, root_rot, flat(root_pos))
    geom = fig.part_geometry(pose, params.gscale, params.rscale)
    enabled = fig.enabled(params.features)
    low = fig.lowest_point(geom, enabled & fig.part_support[None])  # rest on the body and legs, not the hands
    pose.pos[..., 1] -= low[:, None]
    geom["pos"] = geom["pos"].clone()
    geom["pos"][..., 1] -= low[:, None]
    kps, slack = fig.keypoints(pose, params.gscale, params.rscale)  # [N,K,3]
    K = kps.shape[1]
    kps = kps.reshape(B, P, K, 3)
    slack = slack.reshape(B, P, K)
    joints = pose.pos.reshape(B, P, -1, 3)

    # --- camera -------------------------------------------------------------------------------
    big = 1e4
    jmin = torch.where(valid[..., None, None], joints, big).amin(dim=(1, 2))
    jmax = torch.where(valid[..., None, None], joints, -big).amax(dim=(1, 2))
    center = (jmin + jmax) * 0.5
    radius = torch.clamp(0.5 * (jmax - jmin).amax(dim=-1), min=0.3)
    fov = (35.0 + 30.0 * d.u("cam/fov")) * math.pi / 180.0
    s, c = sincos(fov * 0.5)
    fy = (H * 0.5) * c / s
    intr = torch.stack([fy, fy, torch.full_like(fy, W * 0.5), torch.full_like(fy, H * 0.5)], dim=-1)
    lying = (params.pose_class.reshape(B, P) == _lie_class(config)) & valid
    any_lying = lying.any(dim=1)
    elev_lo = torch.where(any_lying, 20.0, -10.0)
    elev_hi = torch.where(any_lying, 70.0, 35.0)
    ue = d.u("cam/elev")
    elev = (elev_lo + (elev_hi - elev_lo) * ue * torch.sqrt(ue)) * math.pi / 180.0  # mostly near eye level
    roll = (d.normal("cam/roll") * 4.0) * math.pi / 180.0
    se, ce = sincos(elev)
    sa, ca = sincos(az)
    view_dir = torch.stack([ce * sa, se, ce * ca], dim=-1)  # from target toward camera
    pts = torch.where(valid[..., None, None], joints, center[:, None, None]).reshape(B, -1, 3)
    fill = torch.where(torch.full_like(fy, float(config.crop)) > 0, 0.62 + 0.3 * d.u("cam/fill"),
                       0.45 + 0.55 * d.u("cam/fill"))
    dist = 3.0 * torch.ones_like(fy)
    margin = 0.12  # metres around joint centres (body surface)
    for _ in range(3):
        cam_pos = center + view_dir * dist[:, None]
        cam_pos = torch.maximum(cam_pos, torch.tensor([-big, 0.25, -big], device=device))
        R = _look_at(cam_pos, center, roll)
        t = -matvec3(R, cam_pos)
        uv, z = _project(pts, R, t, intr)
        pad = margin * fy[:, None] / torch.clamp(z, min=0.1)
        ext_u = (uv[..., 0] + pad).amax(1) - (uv[..., 0] - pad).amin(1)
        ext_v = (uv[..., 1] + pad).amax(1) - (uv[..., 1] - pad).amin(1)
        extent = torch.maximum(ext_u / W, ext_v / H)
        dist = torch.clamp(dist * extent / fill, min=radius + 0.6)
    cam_pos = center + view_dir * dist[:, None]
    cam_pos = torch.maximum(cam_pos, torch.tensor([-big, 0.25, -big], device=device))
    R = _look_at(cam_pos, center, roll)
    t = -matvec3(R, cam_pos)
    # Shift the principal point so the figures' box lands where we want it (like cropping).
    uv, z = _project(pts, R, t, intr)
    pad = margin * fy[:, None] / torch.clamp(z, min=0.1)
    bu = ((uv[..., 0] - pad).amin(1) + (uv[..., 0] + pad).amax(1)) * 0.5
    bv = ((uv[..., 1] - pad).amin(1) + (uv[..., 1] + pad).amax(1)) * 0.5
    jitter = 0.04 if config.crop else 0.12
    want_u = W * (0.5 + jitter * torch.clamp(d.normal("cam/shift_u"), -2.0, 2.0))
    want_v = H * (0.5 + jitter * torch.clamp(d.normal("cam/shift_v"), -2.0, 2.0))
    intr = intr.clone()
    intr[:, 2] = intr[:, 2] + (want_u - bu)
    intr[:, 3] = intr[:, 3] + (want_v - bv)

    # --- figure primitives ----------------------------------------------------------------------
    image_of = torch.arange(B, device=device).repeat_interleave(P)
    instance = slot.repeat(B) + 1
    S = len(slots)
    mat_base = torch.arange(N, device=device) * S
    figure_prims = build_prims(fig, geom, enabled, image_of, instance, mat_base, params.role_cls, params.role_mat,
                               params.role_lo, params.role_hi, _side_class(device), flat(valid))
    materials = [params.materials.reshape(N * S, -1)]
    next_mat = N * S

    # --- room / outdoor -----------------------------------------------------------------------
    outdoor = d.u("bg/outdoor") < 0.3
    floor_mat = _floor_material(d, outdoor, device)
    wall_mat = _wall_materials(d, 2, device)
    materials += [floor_mat, wall_mat.reshape(B * 2, -1)]
    floor_idx = next_mat + torch.arange(B, device=device)
    wall_idx = next_mat + B + torch.arange(B, device=device)[:, None] * 2 + torch.arange(2, device=device)[None]
    next_mat += 3 * B
    up = torch.tensor([0.0, 1.0, 0.0], device=device).expand(B, 3)
    fwd = cam_pos - center
    fwd = normalize3(torch.stack([fwd[:, 0], torch.zeros_like(fwd[:, 0]), fwd[:, 2]], dim=-1))  # toward camera
    wall_yaw = (d.u("bg/wall_yaw") - 0.5) * (50.0 * math.pi / 180.0)
    n_back = matvec3(rot_y(wall_yaw[:, 0]), fwd)
    back_dist = radius + 0.8 + 4.0 * d.u("bg/back_dist")
    back_pt = center - fwd * back_dist[:, None]
    side_sign = torch.where(d.u("bg/side_sign") < 0.5, -1.0, 1.0)
    n_side = matvec3(rot_y(wall_yaw[:, 1]), cross3(up, fwd) * side_sign[:, None])
    side_pt = center - n_side * (radius + 1.5 + 3.0 * d.u("bg/side_dist"))[:, None]
    has_side = ~outdoor & (d.u("bg/has_side") < 0.45)
    plane_n = torch.stack([up, n_back, n_side], dim=1)
    plane_origin = torch.stack([torch.zeros_like(center), back_pt, side_pt], dim=1)
    plane_origin[:, :, 1] = 0.0
    plane_d = dot3(plane_n, plane_origin)
    e1 = normalize3(cross3(up[:, None].expand(B, 3, 3), plane_n))
    e1[:, 0] = torch.tensor([1.0, 0.0, 0.0], device=device)
    e2 = torch.stack([torch.tensor([0.0, 0.0, 1.0], device=device).expand(B, 3), up, up], dim=1)
    cam_side = dot3(plane_n, cam_pos[:, None]) - plane_d > 0.3  # the camera must be inside the room
    plane_valid = torch.stack([torch.ones_like(outdoor), ~outdoor, has_side], dim=1) & cam_side
    plane_mat = torch.cat([floor_idx[:, None], wall_idx], dim=1)

    # --- clutter, seats and wall decorations -----------------------------------------------------
    prims = [figure_prims]
    box_rows = dec_rows = dec_half = None  # material rows of the prop boxes / wall pictures (photo textures)
    if config.clutter:
        # Props stand beside and behind the figures, never between them and the camera (the
        # occluder below is the deliberate exception).
        ang = az[:, None] + (math.pi / 3) + d.u("clutter/box_ang") * (4 * math.pi / 3)
        rad = radius[:, None] + 0.5 + 4.5 * d.u("clutter/box_rad")
        sa_, ca_ = sincos(ang)
        bx = center[:, None, 0] + rad * sa_
        bz = center[:, None, 2] + rad * ca_
        half = torch.stack([0.1 + 0.6 * d.u("clutter/bw"), 0.1 + 0.7 * d.u("clutter/bh"),
                            0.1 + 0.5 * d.u("clutter/bd")], dim=-1)
        # Sometimes one low obstacle stands just in front of the figures (a bench, a crate): it hides
        # legs, never a whole person.
        occ = d.u("clutter/occluder") < (0.1 if config.crop else 0.25)
        towards = normalize3(torch.stack([cam_pos[:, 0] - center[:, 0], torch.zeros_like(fy), cam_pos[:, 2] - center[:, 2]], -1))
        w_occ = radius * 0.5 + 0.45 + 0.5 * d.u("clutter/occ_at")  # metres in front of the group centre
        ox = center[:, 0] + towards[:, 0] * w_occ + 0.3 * d.normal("clutter/occ_x")
        oz = center[:, 2] + towards[:, 2] * w_occ + 0.3 * d.normal("clutter/occ_z")
        bx[:, 0] = torch.where(occ, ox, bx[:, 0])
        bz[:, 0] = torch.where(occ, oz, bz[:, 0])
        half[:, 0, 1] = torch.where(occ, 0.12 + 0.22 * d.u("clutter/occ_h"), half[:, 0, 1])
        half[:, 0, 0] = torch.where(occ, torch.clamp(half[:, 0, 0], max=0.35), half[:, 0, 0])
        half[:, 0, 2] = torch.where(occ, torch.clamp(half[:, 0, 2], max=0.25), half[:, 0, 2])
        box_on = d.u("clutter/box_on") < torch.where(outdoor, 0.3, 0.55)[:, None]
        box_on[:, 0] |= occ
        bx, bz = _inside_room(bx, bz, half.amax(dim=-1), plane_n, plane_d, plane_valid)
        box_center = torch.stack([bx, half[..., 1], bz], dim=-1)
        box_mat = _random_materials(d, "clutter/box_mat")
        materials.append(box_mat.reshape(B * NB, -1))
        box_mat_idx = next_mat + torch.arange(B * NB, device=device)
        box_rows = box_mat_idx.reshape(B, NB)
        next_mat += B * NB
        box_yaw = d.u("clutter/box_yaw") * math.pi
        prims.append(_box_prims(torch.arange(B, device=device).repeat_interleave(NB), box_center.reshape(-1, 3),
                                half.reshape(-1, 3), rot_y(box_yaw.reshape(-1)), box_mat_idx, box_on.reshape(-1)))
        # Balls, poles and blobs.
        ang = az[:, None] + (math.pi / 3) + d.u("clutter/c_ang") * (4 * math.pi / 3)
        rad = radius[:, None] + 0.6 + 5.0 * d.u("clutter/c_rad")
        sa_, ca_ = sincos(ang)
        kind = d.randint("clutter/c_kind", 0, 3)
        r0 = 0.05 + 0.3 * d.u("clutter/c_r")
        height = torch.where(kind == 1, 0.8 + 1.5 * d.u("clutter/c_h"), torch.where(kind == 2, 0.3 * d.u("clutter/c_h2"), 0.0))
        r0 = torch.where(kind == 1, r0 * 0.3, r0)
        cx_, cz_ = _inside_room(center[:, None, 0] + rad * sa_, center[:, None, 2] + rad * ca_, r0, plane_n, plane_d, plane_valid)
        base = torch.stack([cx_, r0, cz_], dim=-1)
        top = base + torch.stack([torch.zeros_like(height), height, torch.zeros_like(height)], dim=-1)
        rb = torch.where(kind == 2, r0 * (0.4 + 0.8 * d.u("clutter/c_rb")), r0)
        c_on = d.u("clutter/c_on") < 0.45
        c_mat = _random_materials(d, "clutter/c_mat")
        materials.append(c_mat.reshape(B * NC, -1))
        c_mat_idx = next_mat + torch.arange(B * NC, device=device)
        next_mat += B * NC
        prims.append(_cone_prims(torch.arange(B, device=device).repeat_interleave(NC), base.reshape(-1, 3), top.reshape(-1, 3),
                                 r0.reshape(-1), rb.reshape(-1), c_mat_idx, c_on.reshape(-1)))
        # Pictures and shelves on the back wall.
        d_on = (d.u("clutter/d_on") < 0.5) & plane_valid[:, 1:2]
        along = (d.u("clutter/d_x") - 0.5) * 6.0
        e1b = e1[:, 1]
        d_half = torch.stack([0.15 + 0.5 * d.u("clutter/dw"), 0.1 + 0.4 * d.u("clutter/dh"),
                              torch.full((B, ND), 0.02, device=device)], dim=-1)
        d_center = back_pt[:, None] + e1b[:, None] * along[..., None] + n_back[:, None] * 0.02
        d_center[..., 1] = 0.8 + 1.4 * d.u("clutter/d_y")
        # Face the wall: columns (along the wall, up, wall normal).
        d_rot = torch.stack([e1b, up, n_back], dim=-1)[:, None].expand(B, ND, 3, 3)
        d_mat = _random_materials(d, "clutter/d_mat")
        materials.append(d_mat.reshape(B * ND, -1))
        d_mat_idx = next_mat + torch.arange(B * ND, device=device)
        dec_rows, dec_half = d_mat_idx.reshape(B, ND), d_half
        next_mat += B * ND
        prims.append(_box_prims(torch.arange(B, device=device).repeat_interleave(ND), d_center.reshape(-1, 3),
                                d_half.reshape(-1, 3), d_rot.reshape(-1, 3, 3), d_mat_idx, d_on.reshape(-1)))
    # Seats under people sitting on a chair.
    seat_on = _seat_mask(params, config) & flat(valid)
    if bool(seat_on.any()):
        seat_top = _seat_height(fig, geom)
        pelvis = pose.pos[:, fig.joint_index[_root_joint(config)]]
        back = matvec3(root_rot, torch.tensor([0.0, 0.0, -0.08], device=device).expand(N, 3))
        half = torch.stack([torch.full((N,), 0.22, device=device), torch.clamp(seat_top * 0.5, min=0.05),
                            torch.full((N,), 0.22, device=device)], dim=-1)
        seat_center = torch.stack([pelvis[:, 0] + back[:, 0], half[:, 1], pelvis[:, 2] + back[:, 2]], dim=-1)
        seat_mat = _random_materials(d, "seat/mat")
        materials.append(seat_mat.reshape(N, -1))
        prims.append(_box_prims(image_of, seat_center, half, rot_y(flat(yaw)), next_mat + torch.arange(N, device=device), seat_on))
        next_mat += N
    all_prims = Prims.cat(prims)

    # --- lighting and post ----------------------------------------------------------------------
    l_el = (25.0 + 50.0 * d.u("light/el")) * math.pi / 180.0
    l_az = d.u("light/az") * (2 * math.pi)
    se, ce = sincos(l_el)
    sa, ca = sincos(l_az)
    light_dir = torch.stack([ce * sa, se, ce * ca], dim=-1)
    warm = d.u("light/warm") - 0.5
    tint = torch.stack([1.0 + 0.15 * warm, torch.ones_like(warm), 1.0 - 0.2 * warm], dim=-1)
    key = 0.55 + 0.45 * d.u("light/key")
    amb = 0.3 + 0.25 * d.u("light/amb")
    light_rgb = tint * key[:, None]
    ambient_rgb = tint * amb[:, None] * torch.tensor([0.95, 1.0, 1.08], device=device)
    sky_top = hsv_to_rgb(0.55 + 0.08 * d.u("sky/h"), 0.35 + 0.4 * d.u("sky/s"), 0.6 + 0.35 * d.u("sky/v"))
    sky_bottom = sky_top * 0.3 + 0.7 * torch.tensor([0.92, 0.93, 0.95], device=device)
    shadow_xz = torch.stack([joints[..., 0, 0], joints[..., 0, 2]], dim=-1)
    shadow_xz = shadow_xz - light_dir[:, None, [0, 2]] * 0.25
    heights = params.height.reshape(B, P)
    shadow_r = torch.where(valid, 0.22 * heights * torch.where(lying, 2.2, 1.0), 0.0)
    exposure = 0.85 + 0.3 * d.u("post/exposure")
    blur = torch.where(d.u("post/blur_on") < 0.25, 0.2 + 0.6 * d.u("post/blur"), 0.0)
    noise = torch.where(d.u("post/noise") < 0.5, 0.0, 0.08 * (d.u("post/noise") - 0.5))  # half the images are clean
    inputs = RenderInputs(
        height=H, width=W, intr=intr, cam_R=R, cam_t=t, prims=all_prims, materials=torch.cat(materials, dim=0),
        plane_n=plane_n, plane_d=plane_d, plane_origin=plane_origin, plane_e1=e1, plane_e2=e2, plane_mat=plane_mat,
        plane_valid=plane_valid, shadow_xz=shadow_xz, shadow_r=shadow_r, light_dir=light_dir, light_rgb=light_rgb,
        ambient_rgb=ambient_rgb, sky_top=sky_top, sky_bottom=sky_bottom, exposure=exposure, blur=blur, noise=noise,
        keys=rng.key,
        photos=(_photo_inputs(config, rng, W / H, next_mat, plane_n.shape[1], box_rows, dec_rows, dec_half,
                              _garment_rows(slots, B, P, device), device)
                if config.photo_backgrounds > 0 or config.photo_clothing > 0 else None),
    )
    category = params.category.reshape(B, P) if hasattr(params, "category") else torch.ones(B, P, dtype=torch.int64, device=device)
    return SceneBatch(inputs, kps, slack, valid, category)


# Material slots that are clothing (photo prints with ``photo_clothing``); skin, hair and the face stay as drawn.
GARMENT_SLOTS = ("top", "bottom", "hat", "bag")


def _garment_rows(slots: Sequence[str], B: int, P: int, device: torch.device) -> Tensor | None:
    """[B, P, G] material rows of each figure's garments (figure ``n`` owns rows ``n * len(slots) + slot``),
    or None for figures without garment slots (quadrupeds)."""
    index = [slots.index(s) for s in GARMENT_SLOTS if s in slots]
    if not index:
        return None
    base = torch.arange(B * P, device=device).reshape(B, P, 1) * len(slots)
    return base + torch.tensor(index, device=device)


def _photo_inputs(config: SceneConfig, rng: Rng, aspect: float, num_mats: int, num_planes: int, box_rows: Tensor | None,
                  dec_rows: Tensor | None, dec_half: Tensor | None, garment_rows: Tensor | None,
                  device: torch.device) -> PhotoInputs:
    """Photo backdrops and textures (see :mod:`.photos`), drawn from their own streams: the rest of the
    scene is the same with or without them, and the garment prints (``photo_clothing``) leave every
    other photo draw as it was."""
    from .photos import PHOTO_HEIGHT, PHOTO_WIDTH, num_photos, photo_atlas

    p = float(config.photo_backgrounds)
    B, NP, N = rng.batch_size, num_planes, num_photos()
    NB = box_rows.shape[1] if box_rows is not None else 0
    ND = dec_rows.shape[1] if dec_rows is not None else 0
    d = Draws(rng, "photo", (), [
        ("bd_on", 1), ("bd_photo", 1), ("bd_size", 1), ("bd_x", 1), ("bd_y", 1), ("bd_flip", 1), ("bd_wb", 3), ("bd_bright", 1),
        ("pl_on", NP), ("pl_photo", NP), ("pl_size", NP), ("pl_off", 2 * NP), ("pl_flip", NP), ("pl_wb", 3 * NP),
        ("pl_bright", NP), ("box_on", max(NB, 1)), ("box_photo", max(NB, 1)), ("box_size", max(NB, 1)),
        ("box_off", 2 * max(NB, 1)), ("box_flip", max(NB, 1)), ("box_wb", 3 * max(NB, 1)), ("box_bright", max(NB, 1)),
        ("dec_on", max(ND, 1)), ("dec_photo", max(ND, 1)), ("dec_wb", 3 * max(ND, 1)), ("dec_bright", max(ND, 1))])
    photo_aspect = PHOTO_WIDTH / PHOTO_HEIGHT

    def gains(name: str, bright: Tensor, n: int | None) -> Tensor:  # colour / white-balance shift
        wb = d.u(name)
        wb = wb.reshape(*wb.shape[:-1], n, 3) if n is not None else wb
        return bright[..., None] * (0.85 + 0.3 * wb)

    # Backdrop: a crop of 35-100% of a photo's width with the image's aspect ratio, maybe mirrored.
    backdrop_on = d.u("bd_on") < p
    backdrop = torch.where(backdrop_on, d.randint("bd_photo", 0, N), -1)
    cw = 0.35 + 0.65 * d.u("bd_size")
    ch = cw * photo_aspect / aspect
    fit = torch.clamp(ch, min=1.0)
    cw, ch = cw / fit, ch / fit
    u0 = d.u("bd_x") * (1.0 - cw)
    v0 = d.u("bd_y") * (1.0 - ch)
    flip = d.u("bd_flip") < 0.5
    backdrop_uv = torch.stack([torch.where(flip, u0 + cw, u0), v0, torch.where(flip, -cw, cw), ch], dim=-1)
    backdrop_gain = gains("bd_wb", 0.6 + 0.6 * d.u("bd_bright"), None)

    # Floor and walls (images without a backdrop): 1.5-6.5 m of plane per photo width.
    plane_on = (d.u("pl_on") < p) & ~backdrop_on[:, None]
    plane_photo = torch.where(plane_on, d.randint("pl_photo", 0, N), -1)
    inv = 1.0 / (1.5 + 5.0 * d.u("pl_size"))
    inv_u = torch.where(d.u("pl_flip") < 0.5, -inv, inv)
    off = d.u("pl_off", 0.0, 2.0).reshape(B, NP, 2)
    plane_tex = torch.stack([inv_u, inv * photo_aspect, off[..., 0], off[..., 1]], dim=-1)
    plane_gain = gains("pl_wb", 0.6 + 0.5 * d.u("pl_bright"), NP)

    # Prop boxes and the occluder (0.4-2 m per photo width), pictures on the wall (the photo fits the face).
    mat_photo = torch.full((num_mats,), -1, dtype=torch.int64, device=device)
    mat_tex = torch.zeros(num_mats, 4, device=device)
    mat_gain = torch.ones(num_mats, 3, device=device)
    if box_rows is not None:
        rows = box_rows.reshape(-1)
        mat_photo[rows], mat_tex[rows], mat_gain[rows] = _material_prints(d, "box_", (B, NB), p, N, (0.4, 1.6), (0.6, 0.5))
    if dec_rows is not None:
        rows = dec_rows.reshape(-1)
        mat_photo[rows] = torch.where(d.u("dec_on") < p, d.randint("dec_photo", 0, N), -1).reshape(-1)
        half = dec_half.reshape(-1, 3)
        mat_tex[rows] = torch.stack([0.5 / half[:, 0], 0.5 / half[:, 1], torch.full_like(half[:, 0], 0.5),
                                     torch.full_like(half[:, 0], 0.5)], dim=-1)
        mat_gain[rows] = gains("dec_wb", 0.7 + 0.4 * d.u("dec_bright"), ND).reshape(-1, 3)
    if garment_rows is not None and config.photo_clothing > 0:
        # Garment prints: 0.25-1.25 m per photo width (a logo or pattern to a whole scene across a shirt),
        # mapped like a box face in the limb's frame. The photo replaces the garment's own colour and
        # stripes; its shading and the labels stay. Their own stream: the other photo draws stay as they were.
        g = Draws(rng, "photo_cloth", garment_rows.shape[1:], [("on", 1), ("photo", 1), ("size", 1), ("off", 2),
                                                                ("flip", 1), ("wb", 3), ("bright", 1)])
        rows = garment_rows.reshape(-1)
        mat_photo[rows], mat_tex[rows], mat_gain[rows] = _material_prints(
            g, "", tuple(garment_rows.shape), float(config.photo_clothing), N, (0.25, 1.0), (0.6, 0.6))
    return PhotoInputs(atlas=photo_atlas(device), backdrop=backdrop, backdrop_uv=backdrop_uv, backdrop_gain=backdrop_gain,
                       plane_photo=plane_photo, plane_tex=plane_tex, plane_gain=plane_gain, mat_photo=mat_photo,
                       mat_tex=mat_tex, mat_gain=mat_gain)


def _material_prints(d: Draws, prefix: str, shape: tuple[int, ...], p: float, num_photos: int,
                     size: tuple[float, float], bright: tuple[float, float]) -> tuple[Tensor, Tensor, Tensor]:
    """Photo prints on ``prod(shape)`` material rows (prop boxes, garments) from ``d``'s draws ``{prefix}on``,
    ``photo``, ``size``, ``flip``, ``off``, ``wb`` and ``bright``: with probability ``p`` a photo (-1: none), at
    ``size[0] + size[1] * u`` metres per photo width, mirrored half the time, at a random offset, with a
    brightness ``bright[0] + bright[1] * u`` and white-balance shift. Returns photo [R], texture [R, 4]
    (1 / metres along the two face axes, offsets) and colour gain [R, 3]."""
    from .photos import PHOTO_HEIGHT, PHOTO_WIDTH

    u = lambda name, *rest: d.u(prefix + name).reshape(*shape, *rest)  # noqa: E731
    photo = torch.where(u("on") < p, d.randint(prefix + "photo", 0, num_photos).reshape(shape), -1)
    inv = 1.0 / (size[0] + size[1] * u("size"))
    inv_u = torch.where(u("flip") < 0.5, -inv, inv)
    off = d.u(prefix + "off", 0.0, 2.0).reshape(*shape, 2)
    tex = torch.stack([inv_u, inv * (PHOTO_WIDTH / PHOTO_HEIGHT), off[..., 0], off[..., 1]], dim=-1)
    gain = (bright[0] + bright[1] * u("bright"))[..., None] * (0.85 + 0.3 * u("wb", 3))
    return photo.reshape(-1), tex.reshape(-1, 4), gain.reshape(-1, 3)


def _inside_room(x: Tensor, z: Tensor, size: Tensor, plane_n: Tensor, plane_d: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Push floor positions [B,n] that lie behind a wall (planes 1..) back in front of it."""
    for k in range(1, plane_n.shape[1]):
        n = plane_n[:, k]
        dist = n[:, None, 0] * x + n[:, None, 2] * z - plane_d[:, k, None]
        push = torch.where(valid[:, k, None], torch.clamp(size + 0.05 - dist, min=0.0), 0.0)
        x = x + push * n[:, None, 0]
        z = z + push * n[:, None, 2]
    return x, z


def _lie_class(config: SceneConfig) -> int:
    if config.figure == "quadruped":
        from .quadruped import _QUAD_CLASSES
        return _QUAD_CLASSES.index("lie")
    from .body import CLASS_NAMES
    return CLASS_NAMES.index("lie")


def _root_joint(config: SceneConfig) -> str:
    return "pelvis" if config.figure == "human" else "hips"


def _seat_mask(params, config: SceneConfig) -> Tensor:
    if config.figure != "human":
        return torch.zeros_like(params.height, dtype=torch.bool)
    from .body import CLASS_NAMES
    return params.pose_class == CLASS_NAMES.index("sit_chair")


def _seat_height(fig, geom: dict[str, Tensor]) -> Tensor:
    """World y of the underside of the pelvis/glutes: where a chair seat must be."""
    names = [n for n in ("pelvis", "l_glute", "r_glute") if n in fig.part_names]
    idx = torch.tensor([fig.part_names.index(n) for n in names], device=geom["pos"].device)
    sub = {k: v[:, idx] for k, v in geom.items()}
    enabled = torch.ones(sub["pos"].shape[:2], dtype=torch.bool, device=geom["pos"].device)
    return fig.lowest_point(sub, enabled)

