"""Batched ray caster: bbox-culled primitives on 8x8 pixel tiles, a z-buffer, planes, shading.

One call renders a whole batch of images with every label: RGB, camera depth, camera-space normals,
body-part classes and instance ids. The only host syncs are a handful per batch (sizes of the
primitive/tile pair list and of the set of covered pixels), none per primitive, pixel or image.

Pipeline:
1. Each primitive's shape-space bounds, cut at the camera's near plane, are projected to a screen
   rectangle and expanded into the 8x8 tiles it touches (``repeat_interleave``): a list of
   (primitive, tile) pairs. Primitives behind a wall are dropped, and a pair is kept only if the
   primitive's bounding capsule reaches the tile's pixel frustum (conservative tests: culling never
   changes a pixel).
2. Every pair tests its 64 pixel rays. The ray quantities the quadratic needs are affine (or, for
   ``q_d . q_d``, quadratic) in the pixel coordinates, so a tile costs a few adds per pixel before the
   intersection itself. Depth and primitive id are packed into one int64 key
   (``float_bits(t) << 24 | id``) and ``scatter_reduce(amin)`` keeps the nearest hit: deterministic,
   order-independent, and the same on CPU and CUDA.
3. Floor and walls are infinite planes hit analytically per pixel (exact depth, normals and ids at
   full resolution); their colour and the sky are shaded at half resolution and upsampled (a softly
   out-of-focus background, for a quarter of the work).
4. Covered pixels are shaded once: normals from the winning primitive, clothing layers, solid
   textures, a key light with hemispheric ambient and soft blob shadows. Object edges get
   anti-aliased; some images get blur and sensor noise.

On the CPU a batch is rendered a few images at a time (the full-frame arrays then stay in cache),
each into its slice of the batch's preallocated outputs; nothing depends on the grouping, so an image
renders to the same bits alone or in any batch.

CPU cost notes (measured on torch 2.13, x86): an elementwise op costs far more in the renderer than
its arithmetic (fresh arrays, cache misses, per-call overhead), so the code avoids temporaries
(in-place ops, outputs written in place), gathers fields with one ``index_select`` per table rather
than one ``take`` per field (~3x faster), and keeps hot loops on data that fits in cache.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .ops import dot3, matvec3, normalize3
from .photos import sample_photos
from .rng import hash32
from .shapes import BOX, NEAR, CameraPrims, Prims, box_hit, cone_constants, cone_hit, shape_bounds, to_camera

__all__ = ["RenderInputs", "PhotoInputs", "RenderOutput", "render", "cast_rays", "MAT_FIELDS", "NUM_MAT_FIELDS", "TILE"]

TILE = 8
_CHUNK_TESTS = 1 << 17  # pixel tests per chunk on the CPU
_CPU_SUB_BATCH = 8  # images rendered at a time on the CPU
_ID_BITS = 24
_ID_MASK = (1 << _ID_BITS) - 1
_NO_HIT = (0x7F800000 << _ID_BITS) | _ID_MASK  # key of "inf depth, no primitive"

# Material table columns. A material is two colours mixed by up to two stripe sets, with per-cell
# colour variation (planks, tiles) and fine grain; coordinates are metres in the primitive's joint
# frame (or the plane's frame).
MAT_FIELDS = {
    "c1": slice(0, 3), "c2": slice(3, 6),
    "k1": slice(6, 9), "duty1": 9, "w1": 10,
    "k2": slice(11, 14), "duty2": 14, "w2": 15,
    "cell_var": 16, "grain": 17, "grain_freq": 18, "spec": 19,
}
NUM_MAT_FIELDS = 20


@dataclass
class RenderInputs:
    """Everything the renderer needs for one batch (all tensors on one device).

    Cameras: ``intr`` [B,4] (fx, fy, cx, cy; pixel centres at integer + 0.5), ``cam_R`` [B,3,3] and
    ``cam_t`` [B,3] with ``x_cam = cam_R @ x_world + cam_t`` (OpenCV axes: x right, y down, z forward).
    Planes (world): ``plane_n`` [B,NP,3] unit normals facing the camera, ``plane_d`` [B,NP]
    (``n . x = d``), ``plane_origin``/``plane_e1``/``plane_e2`` [B,NP,3] texture frames,
    ``plane_mat`` [B,NP] material index, ``plane_valid`` [B,NP]. Plane 0 is the floor (it gets the
    blob shadows ``shadow_xz`` [B,S,2] with radii ``shadow_r`` [B,S], 0 = none).
    Lighting (world): ``light_dir`` [B,3] toward the light, ``light_rgb``/``ambient_rgb`` [B,3],
    ``sky_top``/``sky_bottom`` [B,3]. Post: ``exposure``, ``blur``, ``noise`` [B]; ``keys`` [B] int64
    per-image hash keys for pixel noise.
    """

    height: int
    width: int
    intr: Tensor
    cam_R: Tensor
    cam_t: Tensor
    prims: Prims
    materials: Tensor
    plane_n: Tensor
    plane_d: Tensor
    plane_origin: Tensor
    plane_e1: Tensor
    plane_e2: Tensor
    plane_mat: Tensor
    plane_valid: Tensor
    shadow_xz: Tensor
    shadow_r: Tensor
    light_dir: Tensor
    light_rgb: Tensor
    ambient_rgb: Tensor
    sky_top: Tensor
    sky_bottom: Tensor
    exposure: Tensor
    blur: Tensor
    noise: Tensor
    keys: Tensor
    photos: "PhotoInputs | None" = None

    @property
    def batch_size(self) -> int:
        return int(self.intr.shape[0])


@dataclass
class PhotoInputs:
    """Photo backdrops and textures (:mod:`.photos`; None in :class:`RenderInputs`: none at all).

    ``atlas`` [3,Hp,N*Wp] the photos side by side (float RGB in [0, 1]). Per image: ``backdrop`` [B] photo
    index behind everything that is not a primitive (-1 = none), its texture coordinates
    ``u = backdrop_uv[0] + backdrop_uv[2] * x / W`` and ``v = backdrop_uv[1] + backdrop_uv[3] * y / H``
    and its colour gains ``backdrop_gain`` [B,3]. Per plane: ``plane_photo`` [B,NP] (-1 = the procedural
    texture), ``plane_tex`` [B,NP,4] (1 / metres per photo along e1 and e2, offsets) and ``plane_gain``
    [B,NP,3]. Per material row (boxes only): ``mat_photo`` [M], ``mat_tex`` [M,4] (on a box face's two
    in-plane joint-frame axes), ``mat_gain`` [M,3].
    """

    atlas: Tensor
    backdrop: Tensor
    backdrop_uv: Tensor
    backdrop_gain: Tensor
    plane_photo: Tensor
    plane_tex: Tensor
    plane_gain: Tensor
    mat_photo: Tensor
    mat_tex: Tensor
    mat_gain: Tensor

    def subset(self, lo: int, hi: int) -> "PhotoInputs":
        per_image = ("backdrop", "backdrop_uv", "backdrop_gain", "plane_photo", "plane_tex", "plane_gain")
        return dataclasses.replace(self, **{k: getattr(self, k)[lo:hi] for k in per_image})


@dataclass
class RenderOutput:
    """Rendered batch. ``image`` [B,H,W,3] uint8 RGB; ``depth`` [B,H,W] camera z in metres (0 = sky);
    ``normals`` [B,H,W,3] unit camera-space normals (OpenCV axes; zeros on the sky); ``parts`` [B,H,W]
    uint8 body-part classes (0 = not a person); ``instance`` [B,H,W] uint8 (0 = scenery, k = k-th
    person or animal); ``prim`` [B,H,W] int64 index of the visible primitive (-1 = plane or sky), None
    when not asked for."""

    image: Tensor
    depth: Tensor
    normals: Tensor
    parts: Tensor
    instance: Tensor
    prim: Tensor | None


def _chunk_pairs(device: torch.device) -> int:
    """Pairs per chunk: 128k pixel tests on CPU, 4M on GPUs."""
    return max(1, (_CHUNK_TESTS if device.type == "cpu" else 1 << 22) // (TILE * TILE))


# Corner pairs (indices into the 8 corners, bit k = axis k at its upper bound) joined by the 12 box edges.
_EDGES = [(i, i | (1 << k)) for i in range(8) for k in range(3) if not i & (1 << k)]


def _screen_bounds(prims: Prims, cam: CameraPrims, intr: Tensor, plane_n: Tensor, plane_d: Tensor,
                   plane_valid: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Pixel bounds (umin, umax, vmin, vmax) [M] of what each primitive can show, and whether it can
    show anything (``valid``): in front of the near plane, inside the image, not behind a floor/wall.

    The bounds are those of the primitive's shape-space bounding box cut at the near plane (hits lie
    at camera depth > NEAR): its corners in front plus the points where its edges cross z = NEAR, so a
    box the camera stands next to (half behind it) gets its true extent instead of the whole frame.
    """
    device = prims.image.device
    lo, hi = shape_bounds(prims)
    sel = torch.tensor([[(c >> k) & 1 for k in range(3)] for c in range(8)], device=device, dtype=torch.bool)
    corners = torch.where(sel[None], hi[:, None, :], lo[:, None, :]) * prims.scale[:, None, :]  # [M,8,3]
    pts = matvec3(cam.cam_rot[:, None], corners) + cam.cam_pos[:, None]
    z = pts[..., 2]
    front = z >= NEAR  # (a corner exactly on the near plane is a vertex of the cut box too)
    ei = torch.tensor([e[0] for e in _EDGES], device=device)
    ej = torch.tensor([e[1] for e in _EDGES], device=device)
    zi, zj = z[:, ei], z[:, ej]
    cross = front[:, ei] != front[:, ej]
    f = (NEAR - zi) / torch.where(cross, zj - zi, 1.0)
    xy_near = pts[:, ei, :2] + (pts[:, ej, :2] - pts[:, ei, :2]) * f[..., None]  # [M,12,2] at z = NEAR
    img = prims.image
    fx, fy, cx, cy = (c[:, None] for c in intr[img].unbind(-1))
    zc = torch.clamp(z, min=NEAR)
    u = torch.cat([pts[..., 0] / zc * fx + cx, xy_near[..., 0] / NEAR * fx + cx], dim=1)  # [M,20]
    v = torch.cat([pts[..., 1] / zc * fy + cy, xy_near[..., 1] / NEAR * fy + cy], dim=1)
    use = torch.cat([front, cross], dim=1)
    inf = float("inf")
    margin = 1.0  # pixels: rounding in the bounds never drops a pixel centre
    umin = torch.where(use, u, inf).amin(dim=1) - margin
    umax = torch.where(use, u, -inf).amax(dim=1) + margin
    vmin = torch.where(use, v, inf).amin(dim=1) - margin
    vmax = torch.where(use, v, -inf).amax(dim=1) + margin
    valid = front.any(dim=1) & (umax >= 0) & (umin < width) & (vmax >= 0) & (vmin < height)
    # Behind a wall or under the floor: every corner on the far side of one valid plane.
    n_c = plane_n[img]  # [M,NP,3] camera space
    side = (pts[:, None, :, 0] * n_c[..., 0:1] + pts[:, None, :, 1] * n_c[..., 1:2] + pts[:, None, :, 2] * n_c[..., 2:3]
            - plane_d[img][..., None])  # [M,NP,8]
    hidden = ((side < 0).all(dim=2) & plane_valid[img]).any(dim=1)
    return umin, umax, vmin, vmax, valid & ~hidden


def _tile_pairs(prims: Prims, cam: CameraPrims, intr: Tensor, plane_n: Tensor, plane_d: Tensor, plane_valid: Tensor,
                height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """(primitive, tile) pairs that may overlap. Returns prim index, tile x, tile y.

    Culls: :func:`_screen_bounds` gives each primitive a tile rectangle (and drops primitives out of
    view or behind a floor/wall), and for round cones a pair is kept only if the primitive's bounding
    capsule (segment ``a``-``b`` with radius ``max(ra, rb)`` times the largest scale) comes within reach
    of the tile's pixel frustum: the distance from the tile's central ray to the segment is at most the
    radius plus the frustum's half-width at the capsule's farthest depth (no hit is deeper), with
    margins. Each test is conservative, so culling never changes a pixel.
    """
    device = prims.image.device
    umin, umax, vmin, vmax, valid = _screen_bounds(prims, cam, intr, plane_n, plane_d, plane_valid, height, width)
    ntx, nty = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    tx0 = torch.clamp(torch.floor(umin / TILE), 0, ntx - 1).to(torch.int64)
    tx1 = torch.clamp(torch.floor(umax / TILE), 0, ntx - 1).to(torch.int64)
    ty0 = torch.clamp(torch.floor(vmin / TILE), 0, nty - 1).to(torch.int64)
    ty1 = torch.clamp(torch.floor(vmax / TILE), 0, nty - 1).to(torch.int64)
    nx = tx1 - tx0 + 1
    count = torch.where(valid, nx * (ty1 - ty0 + 1), 0)
    total = int(count.sum())  # host sync: the size of the pair list
    prim_of = torch.repeat_interleave(torch.arange(len(prims), device=device), count, output_size=total)
    start = torch.cumsum(count, 0) - count
    local = torch.arange(total, device=device) - start[prim_of]
    w = nx[prim_of]
    tx = tx0[prim_of] + local % w
    ty = ty0[prim_of] + local // w

    # Capsule vs tile frustum for round cones.
    fx, fy, cx, cy = intr[prims.image].unbind(-1)
    a_c = matvec3(cam.cam_rot, prims.a * prims.scale) + cam.cam_pos
    b_c = matvec3(cam.cam_rot, prims.b * prims.scale) + cam.cam_pos
    r = torch.maximum(prims.ra, prims.rb) * prims.scale.amax(dim=1)
    far = torch.clamp(torch.maximum(a_c[:, 2], b_c[:, 2]) + r, min=NEAR)
    pixel = torch.maximum(1.0 / fx, 1.0 / fy)
    reach = r * 1.001 + (0.5 * TILE * 1.4143 + 0.5) * pixel * far * 1.02  # radius + frustum half-width
    pi = prim_of
    A, E = a_c[pi], (b_c - a_c)[pi]
    d = torch.stack([((tx * TILE).to(torch.float32) + 0.5 * TILE - cx[pi]) / fx[pi],
                     ((ty * TILE).to(torch.float32) + 0.5 * TILE - cy[pi]) / fy[pi], torch.ones_like(A[:, 0])], dim=-1)
    inv_a = 1.0 / dot3(d, d)
    p0 = A - d * (dot3(d, A) * inv_a)[:, None]
    p1 = E - d * (dot3(d, E) * inv_a)[:, None]
    s = torch.clamp(-dot3(p0, p1) / torch.clamp(dot3(p1, p1), min=1e-20), 0.0, 1.0)
    gap = p0 + p1 * s[:, None]
    keep = (dot3(gap, gap) <= reach[pi] * reach[pi]) | (prims.kind[pi] == BOX)
    keep_idx = torch.nonzero(keep).squeeze(1)  # host sync
    return prim_of[keep_idx], tx[keep_idx], ty[keep_idx]


def _affine_forms(pix: Tensor, vecs: Tensor) -> Tensor:
    """Coefficients (u, v, 1) of ``vec . q_d`` where ``q_d = pix @ (u, v, 1)``. [M,3] x [M,3,3] -> [M,3]."""
    return vecs[:, 0:1] * pix[:, 0, :] + vecs[:, 1:2] * pix[:, 1, :] + vecs[:, 2:3] * pix[:, 2, :]


def _quadratic_form(pix: Tensor) -> Tensor:
    """Coefficients (uu, vv, uv, u, v, 1) of ``q_d . q_d`` [M,6]."""
    c0, c1, c2 = pix[..., 0], pix[..., 1], pix[..., 2]
    return torch.stack([dot3(c0, c0), dot3(c1, c1), 2.0 * dot3(c0, c1), 2.0 * dot3(c0, c2), 2.0 * dot3(c1, c2),
                        dot3(c2, c2)], dim=-1)


def _eval_affine(coef: "list[Tensor]", u0: Tensor, v0: Tensor, ramp: Tensor) -> Tensor:
    """Affine form (cu, cv, c1) [P,1] each on each pair's tile (first pixel centres u0, v0 [P,1]) -> [P,T,T]
    (rows = v)."""
    cu, cv, c1 = coef
    base = cu * u0 + cv * v0 + c1
    row = base + cv * ramp  # [P,T] over j
    col = cu * ramp  # [P,T] over i
    return row[:, :, None] + col[:, None, :]


def _eval_quadratic(q: "list[Tensor]", u0: Tensor, v0: Tensor, ramp: Tensor, ramp2: Tensor) -> Tensor:
    """The quadratic form (uu, vv, uv, u, v, 1) [P,1] each, like :func:`_eval_affine`."""
    quu, qvv, quv, qu, qv, q1 = q
    u = u0 + ramp
    v = v0 + ramp
    col = (quu * u + qu + quv * v0) * u
    row = (qvv * v + qv) * v + q1 + quv * u0 * ramp
    return (row[:, :, None] + col[:, None, :]) + quv[:, :, None] * ramp2[None]


def _zbuffer(inputs: RenderInputs, cam: CameraPrims, n_c: Tensor, d_c: Tensor) -> Tensor:
    """Nearest-hit keys [B, H8, W8] on the tile-padded frame (``float_bits(depth) << 24 | primitive``;
    ``_NO_HIT`` where empty or not tested)."""
    prims = inputs.prims
    H, W = inputs.height, inputs.width
    B = inputs.batch_size
    device = inputs.intr.device
    H8, W8 = -(-H // TILE) * TILE, -(-W // TILE) * TILE
    zbuf = torch.full((B * H8 * W8,), _NO_HIT, dtype=torch.int64, device=device)
    if len(prims) == 0:
        return zbuf.reshape(B, H8, W8)
    if len(prims) > _ID_MASK:
        raise ValueError(f"too many primitives in one batch ({len(prims)}); render fewer images at a time")
    ramp = torch.arange(TILE, device=device, dtype=torch.float32)
    ramp2 = ramp[:, None] * ramp[None, :]
    iramp = torch.arange(TILE, device=device, dtype=torch.int64)
    prim_of, tx, ty = _tile_pairs(prims, cam, inputs.intr, n_c, d_c, inputs.plane_valid, H, W)
    # Cone pairs first, then box pairs, so every chunk runs one intersection routine.
    is_box = (prims.kind == BOX)[prim_of]
    order = torch.argsort(is_box.to(torch.int8), stable=True)
    prim_of, tx, ty = prim_of[order], tx[order], ty[order]
    num_cone = int(prim_of.shape[0]) - int(is_box.sum())  # host sync
    consts = cone_constants(cam.origin, prims.a, prims.b, prims.ra, prims.rb)
    # Per-primitive tables [M, F]: one gather per chunk gives every field of its pairs, each a [P,1]
    # column that broadcasts over the tile: the affine forms of ba.q_d, oa.q_d, ob.q_d (3 x (u, v, 1)),
    # q_d.q_d (6) and the cone constants (5); for boxes the camera centre in shape space (3) and the
    # (u, v, 1) forms of q_d's components (3 x 3).
    cone_table = torch.cat([torch.stack([_affine_forms(cam.pix, consts[k]) for k in ("ba", "oa", "ob")], dim=1).reshape(-1, 9),
                            _quadratic_form(cam.pix), torch.stack([consts[k] for k in ("d2", "k0", "cy", "ea", "eb")], dim=1)],
                           dim=1)  # [M, 20]
    box_table = torch.cat([cam.origin, cam.pix.reshape(-1, 9)], dim=1)  # [M, 12]
    row_base = prims.image * (H8 * W8)
    chunk = _chunk_pairs(device)
    total = int(prim_of.shape[0])
    for lo_, hi_, cone in ((0, num_cone, True), (num_cone, total, False)):
        for s in range(lo_, hi_, chunk):
            e = min(s + chunk, hi_)
            pp, ptx, pty = prim_of[s:e], tx[s:e], ty[s:e]
            u0 = (ptx * TILE).to(torch.float32)[:, None] + 0.5  # [P,1] the tile's first pixel centre
            v0 = (pty * TILE).to(torch.float32)[:, None] + 0.5
            if cone:
                f = [c[:, None] for c in cone_table.index_select(0, pp).unbind(1)]  # [P,1] columns
                g2 = _eval_affine(f[0:3], u0, v0, ramp)
                g3 = _eval_affine(f[3:6], u0, v0, ramp)
                g6 = _eval_affine(f[6:9], u0, v0, ramp)
                dd = _eval_quadratic(f[9:15], u0, v0, ramp, ramp2)
                t = cone_hit(g2, g3, g6, dd, *(c[:, :, None] for c in f[15:20]))
            else:
                f = [c[:, None] for c in box_table.index_select(0, pp).unbind(1)]
                dx, dy, dz = (_eval_affine(f[3 + 3 * k:6 + 3 * k], u0, v0, ramp) for k in range(3))
                t = box_hit(f[0][:, :, None], f[1][:, :, None], f[2][:, :, None], dx, dy, dz)
            key = (t.view(torch.int32).to(torch.int64) << _ID_BITS) | pp[:, None, None]
            row = row_base[pp][:, None] + (pty[:, None] * TILE + iramp) * W8  # [P,T]
            col = ptx[:, None] * TILE + iramp
            zbuf.scatter_reduce_(0, (row[:, :, None] + col[:, None, :]).reshape(-1), key.reshape(-1), reduce="amin")
    return zbuf.reshape(B, H8, W8)


def cast_rays(prims: Prims, cam: CameraPrims, ray_image: Tensor, ray_uv: Tensor, num_images: int) -> tuple[Tensor, Tensor]:
    """Nearest primitive hit along arbitrary camera rays through continuous pixel positions.

    ``ray_image`` [R] batch index, ``ray_uv`` [R,2] pixel coordinates (pixel centres at integer +
    0.5). Every ray is tested against every primitive of its image. Returns depth [R] (``inf`` where
    missed) and primitive index [R] (-1 where missed).
    """
    device = ray_uv.device
    R = int(ray_image.shape[0])
    if R == 0 or len(prims) == 0:
        return torch.full((R,), float("inf"), device=device), torch.full((R,), -1, dtype=torch.int64, device=device)
    order = torch.argsort(prims.image, stable=True)
    per_image = torch.bincount(prims.image, minlength=num_images)
    first = torch.cumsum(per_image, 0) - per_image
    count = per_image[ray_image]
    total = int(count.sum())
    ray_of = torch.repeat_interleave(torch.arange(R, device=device), count, output_size=total)
    local = torch.arange(total, device=device) - (torch.cumsum(count, 0) - count)[ray_of]
    pp = order[first[ray_image[ray_of]] + local]
    uvw = torch.cat([ray_uv[ray_of], torch.ones(total, 1, device=device)], dim=1)
    q_d = matvec3(cam.pix[pp], uvw)
    consts = cone_constants(cam.origin[pp], prims.a[pp], prims.b[pp], prims.ra[pp], prims.rb[pp])
    t_cone = cone_hit(dot3(consts["ba"], q_d), dot3(consts["oa"], q_d), dot3(consts["ob"], q_d), dot3(q_d, q_d),
                      consts["d2"], consts["k0"], consts["cy"], consts["ea"], consts["eb"])
    o = cam.origin[pp]
    t_box = box_hit(o[:, 0], o[:, 1], o[:, 2], q_d[:, 0], q_d[:, 1], q_d[:, 2])
    t = torch.where(prims.kind[pp] == BOX, t_box, t_cone)
    key = (t.view(torch.int32).to(torch.int64) << _ID_BITS) | pp
    best = torch.full((R,), _NO_HIT, dtype=torch.int64, device=device)
    best.scatter_reduce_(0, ray_of, key, reduce="amin")
    depth = (best >> _ID_BITS).to(torch.int32).view(torch.float32)
    prim = torch.where(depth < float("inf"), best & _ID_MASK, -1)
    return depth, prim


def plane_depths(inputs: RenderInputs, ray_image: Tensor, ray_uv: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest plane along rays: depth [R] (inf = none) and plane index [R] (-1 = none)."""
    n_c, d_c = _planes_in_camera(inputs)
    fx, fy, cx, cy = inputs.intr[ray_image].unbind(-1)
    dirs = torch.stack([(ray_uv[:, 0] - cx) / fx, (ray_uv[:, 1] - cy) / fy, torch.ones_like(fx)], dim=-1)
    best = torch.full_like(fx, float("inf"))
    index = torch.full_like(ray_image, -1)
    for k in range(n_c.shape[1]):
        denom = dot3(n_c[ray_image, k], dirs)
        t = d_c[ray_image, k] / torch.where(denom.abs() < 1e-12, 1e-12, denom)
        ok = inputs.plane_valid[ray_image, k] & (t > NEAR) & (t < best)
        best = torch.where(ok, t, best)
        index = torch.where(ok, k, index)
    return best, index


def _planes_in_camera(inputs: RenderInputs) -> tuple[Tensor, Tensor]:
    n_c = matvec3(inputs.cam_R[:, None], inputs.plane_n)
    d_c = inputs.plane_d + dot3(n_c, inputs.cam_t[:, None])
    return n_c, d_c


# Material columns a planar (2D) texture reads: colours, in-plane stripe vectors, duties, weights, variation.
_PLANAR_FIELDS = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19]


def _frac(x: Tensor) -> Tensor:
    return x - torch.floor(x)


def _hash3(x: Tensor, y: Tensor, z: Tensor | None = None) -> Tensor:
    """A float hash in [-0.5, 0.5) of integer-valued cell coordinates (basic arithmetic only)."""
    p, q = _frac(x * 0.1031), _frac(y * 0.1030)
    r = _frac(z * 0.0973) if z is not None else torch.full_like(p, 0.37)
    d = p * (r + 33.33) + q * (p + 33.33) + r * (q + 33.33)
    return _frac((p + q + 2.0 * d) * (r + d)) - 0.5


def _dot(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _albedo(mat: "list[Tensor]", h: tuple[Tensor, Tensor, Tensor], planar: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Material colour at texture coordinates ``h`` (metres). ``mat[f]`` is material field ``f`` per pixel.

    Per-cell colour variation (planks, tiles) is evaluated for planes only (``planar``)."""
    if planar:  # plane textures are 2D (h[2] == 0)
        s1 = h[0] * mat[6] + h[1] * mat[7]
        s2 = h[0] * mat[11] + h[1] * mat[12]
    else:
        s1 = _dot(h, (mat[6], mat[7], mat[8]))
        s2 = _dot(h, (mat[11], mat[12], mat[13]))
    m1 = (_frac(s1) < mat[9]).to(s1.dtype) * mat[10]
    m2 = (_frac(s2) < mat[14]).to(s2.dtype) * mat[15]
    m = torch.maximum(m1, m2)
    gf = mat[18]
    grain = _hash3(torch.floor(h[0] * gf), torch.floor(h[1] * gf), None if planar else torch.floor(h[2] * gf))
    shade = 1.0 + mat[17] * grain
    if planar:
        shade = shade + mat[16] * _hash3(torch.floor(s1), torch.floor(s2))
    return tuple((mat[c] + (mat[3 + c] - mat[c]) * m) * shade for c in range(3))  # type: ignore[return-value]


def _take(table_T: Tensor, index: Tensor) -> list[Tensor]:
    """Rows of a column-major table [F, M] gathered at ``index`` (any shape) -> F contiguous tensors shaped
    like ``index``. One ``index_select`` along the table's columns gathers every field at once (on the
    CPU ~3x faster than a ``take`` per field) and leaves each field's values contiguous."""
    return list(torch.index_select(table_T, 1, index.reshape(-1)).reshape(table_T.shape[0], *index.shape).unbind(0))


def _pack(fields: list[Tensor]) -> Tensor:
    """Concatenate per-row fields ([M] or [M,k]) into a column-major table [F, M] (float32)."""
    cols = [f.reshape(f.shape[0], -1).to(torch.float32) for f in fields]
    return torch.cat(cols, dim=1).t().contiguous()


def _subset(inputs: RenderInputs, lo: int, hi: int) -> tuple[RenderInputs, Tensor]:
    """Images ``lo:hi`` of a batch (primitives re-indexed) and the kept primitives' original indices."""
    keep = torch.nonzero((inputs.prims.image >= lo) & (inputs.prims.image < hi)).squeeze(1)
    prims = inputs.prims.select(keep)
    prims.image = prims.image - lo
    fields = {f.name: getattr(inputs, f.name) for f in dataclasses.fields(RenderInputs)}
    sub = {k: (v[lo:hi] if isinstance(v, Tensor) and k != "materials" else v) for k, v in fields.items()}
    sub["prims"] = prims
    if inputs.photos is not None:
        sub["photos"] = inputs.photos.subset(lo, hi)
    return RenderInputs(**sub), keep


def render(inputs: RenderInputs, max_batch: int | None = None, prim_ids: bool = True) -> RenderOutput:
    """Render a batch: see :class:`RenderInputs` and :class:`RenderOutput`.

    ``max_batch`` images are rendered at a time (default: 8 on CPU, where the full-frame arrays of a
    few images stay in cache, all on GPUs); the outputs are the same either way. ``prim_ids=False``
    skips the per-pixel primitive index map (``prim`` is then None; the dataset does not use it).
    """
    B, H, W = inputs.batch_size, inputs.height, inputs.width
    device = inputs.intr.device
    step = max_batch or (_CPU_SUB_BATCH if device.type == "cpu" else B)
    # Every output is allocated once and each sub-batch writes its slice of it (no concatenation).
    out = RenderOutput(
        image=torch.empty(B, H, W, 3, dtype=torch.uint8, device=device),
        depth=torch.empty(B, H, W, device=device),
        normals=torch.empty(B, H, W, 3, device=device),
        parts=torch.empty(B, H, W, dtype=torch.uint8, device=device),
        instance=torch.empty(B, H, W, dtype=torch.uint8, device=device),
        prim=torch.empty(B, H, W, dtype=torch.int64, device=device) if prim_ids else None,
    )
    if B <= step:
        _render(inputs, out, None)
        return out
    for lo in range(0, B, step):
        hi = min(lo + step, B)
        sub, keep = _subset(inputs, lo, hi)
        part = {f.name: (None if getattr(out, f.name) is None else getattr(out, f.name)[lo:hi])
                for f in dataclasses.fields(RenderOutput)}
        _render(sub, RenderOutput(**part), keep)
    return out


def _render(inputs: RenderInputs, out: RenderOutput, keep: Tensor | None) -> None:
    """Render one (sub-)batch into ``out``'s tensors; ``keep`` maps its primitives to the batch's."""
    H, W, B = inputs.height, inputs.width, inputs.batch_size
    device = inputs.intr.device
    prims = inputs.prims
    cam = to_camera(prims, inputs.cam_R, inputs.cam_t, inputs.intr)
    n_c, d_c = _planes_in_camera(inputs)
    zkey = _zbuffer(inputs, cam, n_c, d_c)[:, :H, :W]

    # Planes per pixel at full resolution (depth, normals, ids) ...
    ys = torch.arange(H, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(W, device=device, dtype=torch.float32) + 0.5
    t_plane, plane_idx, _, _ = _plane_hits(inputs, n_c, d_c, xs, ys)
    t_prim = (zkey >> _ID_BITS).to(torch.int32).view(torch.float32)
    prim_hit = (t_prim < float("inf")) & (t_prim <= t_plane)
    plane_hit = ~prim_hit & (plane_idx >= 0)
    depth = torch.where(prim_hit, t_prim, torch.where(plane_hit, t_plane, 0.0), out=out.depth)
    # Valid planes face the camera (the scene keeps the camera on their front side): no flip needed.
    # One gather of [B*H*W, 3] rows from the planes' normals plus a zero row for every other pixel.
    NP = n_c.shape[1]
    n_rows = torch.cat([n_c.reshape(B * NP, 3), n_c.new_zeros(1, 3)])  # [B*NP+1, 3]
    n_index = torch.where(plane_hit, plane_idx.to(torch.int64) + _image_base(B, NP, device), B * NP)
    normals = torch.index_select(n_rows, 0, n_index.reshape(-1), out=out.normals.view(-1, 3))  # [B*H*W, 3]
    # ... and their colour (with the sky) at half resolution, upsampled: backgrounds come out slightly
    # soft, like an out-of-focus background, for a quarter of the shading work.
    light_c = normalize3(matvec3(inputs.cam_R, inputs.light_dir))
    up_c = inputs.cam_R[:, :, 1]  # world +y in camera space
    half_c = normalize3(light_c + torch.tensor([0.0, 0.0, -1.0], device=device))
    exposure = inputs.exposure[:, None]  # folded into the lights and the sky: no per-pixel pass
    img_T = _pack([inputs.intr, light_c, up_c, half_c, inputs.light_rgb * exposure, inputs.ambient_rgb * exposure])  # [19,B]
    H2, W2 = (H + 1) // 2, (W + 1) // 2
    ys2 = torch.arange(H2, device=device, dtype=torch.float32) * 2.0 + 1.0
    xs2 = torch.arange(W2, device=device, dtype=torch.float32) * 2.0 + 1.0
    bg = _background(inputs, n_c, d_c, img_T, xs2, ys2)
    rgb = _upsample2(bg, H, W).reshape(3, -1)
    if inputs.photos is not None:
        _backdrop(inputs, rgb)
    parts = out.parts.view(-1).zero_()
    instance = out.instance.view(-1).zero_()
    if out.prim is not None:
        out.prim.fill_(-1)

    # Primitive pixels: gather the winning primitive's fields once per covered pixel.
    pi = torch.nonzero(prim_hit.reshape(-1)).squeeze(1)
    if pi.numel():
        local = zkey.reshape(-1).index_select(0, pi) & _ID_MASK
        if out.prim is not None:
            out.prim.view(-1).index_copy_(0, pi, local if keep is None else keep.index_select(0, local))
        # Camera-space hit point -> the primitive's joint frame (x_joint = R^T (x_cam - pos)). The terms
        # of the cone normal that depend on the primitive only (ba, d2, rr * ra) come with its fields.
        ba_ = prims.b - prims.a
        rr_ = prims.ra - prims.rb
        P = _take(_pack([cam.cam_pos, cam.cam_rot, prims.scale, prims.a, prims.b, ba_, dot3(ba_, ba_) - rr_ * rr_,
                         rr_ * prims.ra, prims.s_axis, prims.s_off, prims.layer_lo, prims.layer_hi, prims.kind,
                         prims.part, prims.mat, prims.layer_cls, prims.layer_mat, prims.instance]), local)
        hw = H * W
        b = torch.div(pi, hw, rounding_mode="floor")
        rem = pi - b * hw
        yy = torch.div(rem, W, rounding_mode="floor")
        img = _take(img_T, b)
        t = depth.reshape(-1).index_select(0, pi)
        ray = (((rem - yy * W).to(torch.float32) + 0.5 - img[2]) / img[0], (yy.to(torch.float32) + 0.5 - img[3]) / img[1])
        rel = (t * ray[0] - P[0], t * ray[1] - P[1], t - P[2])
        R = P[3:12]
        scale = (P[12], P[13], P[14])
        h = tuple(R[r] * rel[0] + R[3 + r] * rel[1] + R[6 + r] * rel[2] for r in range(3))  # joint frame (metres)
        q = tuple(h[r] / scale[r] for r in range(3))  # shape space
        a, bb, ba = (P[15], P[16], P[17]), (P[18], P[19], P[20]), (P[21], P[22], P[23])
        d2, rr_ra = P[24], P[25]
        p = tuple(q[r] - a[r] for r in range(3))
        y = _dot(ba, p) - rr_ra
        cap_a, cap_b = y <= 0, y >= d2
        n_s = [torch.where(cap_a, p[r], torch.where(cap_b, q[r] - bb[r], d2 * p[r] - ba[r] * y)) for r in range(3)]
        box_px = torch.nonzero(P[34] == BOX).squeeze(1)
        if box_px.numel():  # box pixels (a few): the face normal, the axis where |q| is largest
            qb = [qq.index_select(0, box_px) for qq in q]
            aq = [qq.abs() for qq in qb]
            bx = (aq[0] >= aq[1]) & (aq[0] >= aq[2])
            by = ~bx & (aq[1] >= aq[2])
            for r, m in enumerate((bx, by, ~bx & ~by)):
                n_s[r].index_copy_(0, box_px, torch.where(m, torch.where(qb[r] >= 0, 1.0, -1.0), 0.0))
        ns = tuple(n_s[r] / scale[r] for r in range(3))
        nc = [R[3 * r] * ns[0] + R[3 * r + 1] * ns[1] + R[3 * r + 2] * ns[2] for r in range(3)]
        inv = 1.0 / torch.sqrt(torch.clamp(nc[0] * nc[0] + nc[1] * nc[1] + nc[2] * nc[2], min=1e-30))
        flip = torch.where(nc[0] * ray[0] + nc[1] * ray[1] + nc[2] > 0, -inv, inv)  # normals face the camera
        nc = tuple(c * flip for c in nc)
        s = _dot(h, (P[26], P[27], P[28])) + P[29]
        in0 = (s >= P[30]) & (s < P[32])
        in1 = (s >= P[31]) & (s < P[33]) & ~in0
        part = torch.where(in0, P[37], torch.where(in1, P[38], P[35]))
        mat_id = torch.where(in0, P[39], torch.where(in1, P[40], P[36])).to(torch.int64)
        mat = _take(inputs.materials.t().contiguous(), mat_id)
        albedo = _albedo(mat, h)
        if inputs.photos is not None:
            albedo = _box_photos(inputs.photos, albedo, mat_id, h, q)
        col = _shade(albedo, nc, img, mat[MAT_FIELDS["spec"]], None)
        rgb.index_copy_(1, pi, torch.stack(col))
        normals.index_copy_(0, pi, torch.stack(nc, dim=1))
        parts.index_copy_(0, pi, part.to(torch.uint8))
        instance.index_copy_(0, pi, P[41].to(torch.uint8))

    ids = torch.where(prim_hit, (zkey & _ID_MASK).to(torch.int32), -2 - plane_idx.to(torch.int32))
    _post(rgb.reshape(3, B, H, W), ids, inputs, out.image)


def _plane_hits(inputs: RenderInputs, n_c: Tensor, d_c: Tensor, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Nearest plane per pixel centre (xs [W'], ys [H']): depth [B,H',W'] (inf = none), plane index
    (-1 = none) and the ray's x/y slopes ([B,1,W'], [B,H',1])."""
    B = n_c.shape[0]
    bc = lambda t: t[:, None, None]
    fx, fy, cx, cy = (bc(f) for f in inputs.intr.unbind(-1))
    rx = (xs[None, None, :] - cx) / fx
    ry = (ys[None, :, None] - cy) / fy
    t_plane = torch.full((B, ys.shape[0], xs.shape[0]), float("inf"), device=xs.device)
    plane_idx = torch.full(t_plane.shape, -1, dtype=torch.int8, device=xs.device)
    used = inputs.plane_valid.any(dim=0).tolist()  # planes no image uses cannot win: skip them
    for k in range(n_c.shape[1]):
        if not used[k]:
            continue
        nk = n_c[:, k]
        denom = (bc(nk[:, 1]) * ry + bc(nk[:, 2])) + bc(nk[:, 0]) * rx
        # Invalid planes get d = -inf so t is never a positive finite depth; denom == 0 gives inf.
        t = bc(torch.where(inputs.plane_valid[:, k], d_c[:, k], -float("inf"))) / denom
        ok = (t > NEAR) & (t < t_plane)
        t_plane = torch.where(ok, t, t_plane)
        plane_idx = torch.where(ok, k, plane_idx)
    return t_plane, plane_idx, rx, ry


def _background(inputs: RenderInputs, n_c: Tensor, d_c: Tensor, img_T: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """Shaded floor, walls and sky at the given pixel centres -> [3,B,H',W']."""
    bc = lambda t: t[:, None, None]
    t_plane, plane_idx, rx, ry = _plane_hits(inputs, n_c, d_c, xs, ys)
    hit = plane_idx >= 0
    e1_c = matvec3(inputs.cam_R[:, None], inputs.plane_e1)
    e2_c = matvec3(inputs.cam_R[:, None], inputs.plane_e2)
    o_c = matvec3(inputs.cam_R[:, None], inputs.plane_origin) + inputs.cam_t[:, None]
    # Texture coordinates are linear in (rx, ry) times depth: fold each plane's frame into 3 numbers.
    c1 = torch.stack([e1_c[..., 0], e1_c[..., 1], e1_c[..., 2], -dot3(o_c, e1_c)], dim=-1)  # [B,NP,4]
    c2 = torch.stack([e2_c[..., 0], e2_c[..., 1], e2_c[..., 2], -dot3(o_c, e2_c)], dim=-1)
    # Only the material fields a 2D texture uses (k1/k2 lose their third component).
    mats = inputs.materials[inputs.plane_mat][..., _PLANAR_FIELDS]  # [B,NP,18]
    table = torch.cat([c1, c2, n_c, mats], dim=-1)  # [B,NP,29]
    # Per pixel, its plane's row (plane 0's where none: those pixels show the sky, whatever they hold).
    NP = table.shape[1]
    p_index = plane_idx.clamp(min=0).to(torch.int64) + _image_base(table.shape[0], NP, table.device)
    pick = _take(table.reshape(-1, table.shape[-1]).t().contiguous(), p_index)
    tp = torch.where(hit, t_plane, 0.0)
    h1 = tp * ((pick[0] * rx + pick[1] * ry) + pick[2]) + pick[3]
    h2 = tp * ((pick[4] * rx + pick[5] * ry) + pick[6]) + pick[7]
    nrm = pick[8:11]
    mat = dict(zip(_PLANAR_FIELDS, pick[11:]))
    albedo = _albedo(mat, (h1, h2, torch.zeros_like(h1)), planar=True)
    if inputs.photos is not None:
        albedo = _plane_photos(inputs.photos, albedo, p_index, hit, h1, h2)
    # Soft blob shadows on the floor (plane 0; its texture coordinates are world x and z).
    fall = torch.zeros_like(h1)
    for j in range(inputs.shadow_r.shape[1]):
        dx = h1 - bc(inputs.shadow_xz[:, j, 0])
        dz = h2 - bc(inputs.shadow_xz[:, j, 1])
        r = bc(inputs.shadow_r[:, j])
        f = torch.clamp(1.0 - (dx * dx + dz * dz) / torch.clamp(r * r, min=1e-6), min=0.0)
        fall = torch.maximum(fall, torch.where(r > 0, f * f, 0.0))
    shadow = torch.where(plane_idx == 0, 0.75 * fall, 0.0)
    lit = _shade(albedo, tuple(nrm), [bc(c) for c in img_T.unbind(0)], mat[MAT_FIELDS["spec"]], shadow)
    up_c = img_T[7:10]
    up = torch.clamp((bc(up_c[0]) * rx + bc(up_c[1]) * ry + bc(up_c[2])) / torch.sqrt(rx * rx + ry * ry + 1.0), 0.0, 1.0)
    e = inputs.exposure
    sky = [bc(inputs.sky_bottom[:, c] * e) + bc((inputs.sky_top[:, c] - inputs.sky_bottom[:, c]) * e) * up for c in range(3)]
    return torch.stack([torch.where(hit, lit[c], sky[c]) for c in range(3)])


def _backdrop(inputs: RenderInputs, rgb: Tensor) -> None:
    """Replace the background [3, B*H*W] (in place) of the images that have a photo backdrop by their crop."""
    ph = inputs.photos
    bi = torch.nonzero(ph.backdrop >= 0).squeeze(1)
    if bi.numel() == 0:
        return
    B, H, W = inputs.batch_size, inputs.height, inputs.width
    device = rgb.device
    n = int(bi.shape[0])
    uv = ph.backdrop_uv.index_select(0, bi)
    xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5) / W
    ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5) / H
    u = (uv[:, 0, None, None] + uv[:, 2, None, None] * xs[None, None, :]).expand(n, H, W)
    v = (uv[:, 1, None, None] + uv[:, 3, None, None] * ys[None, :, None]).expand(n, H, W)
    index = ph.backdrop.index_select(0, bi)[:, None, None].expand(n, H, W)
    pix = sample_photos(ph.atlas, index.reshape(-1), u.reshape(-1), v.reshape(-1)).reshape(3, n, H * W)
    pix = pix * ph.backdrop_gain.index_select(0, bi).t()[:, :, None]
    rgb.view(3, B, H * W).index_copy_(1, bi, pix)


def _plane_photos(ph: PhotoInputs, albedo: tuple[Tensor, Tensor, Tensor], p_index: Tensor, hit: Tensor, h1: Tensor,
                  h2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Plane albedo with photo textures where a pixel's plane has one (texture coordinates h1, h2 in metres)."""
    photo = ph.plane_photo.reshape(-1).index_select(0, p_index.reshape(-1))
    sel = torch.nonzero((photo >= 0) & hit.reshape(-1)).squeeze(1)
    if sel.numel() == 0:
        return albedo
    rows = p_index.reshape(-1).index_select(0, sel)
    tex = ph.plane_tex.reshape(-1, 4).index_select(0, rows)
    a = h1.reshape(-1).index_select(0, sel)
    b = h2.reshape(-1).index_select(0, sel)
    pix = sample_photos(ph.atlas, photo.index_select(0, sel), a * tex[:, 0] + tex[:, 2], -b * tex[:, 1] + tex[:, 3])
    pix = pix * ph.plane_gain.reshape(-1, 3).index_select(0, rows).t()
    out = torch.stack(albedo).reshape(3, -1)
    out.index_copy_(1, sel, pix)
    out = out.reshape(3, *h1.shape)
    return out[0], out[1], out[2]


def _box_photos(ph: PhotoInputs, albedo: tuple[Tensor, Tensor, Tensor], mat_id: Tensor, h: tuple[Tensor, ...],
                q: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Primitive albedo [M] with photo textures on box faces whose material has one: the face is the
    shape-space axis where |q| is largest, its photo axes the other two joint-frame axes (metres)."""
    photo = ph.mat_photo.index_select(0, mat_id)
    sel = torch.nonzero(photo >= 0).squeeze(1)
    if sel.numel() == 0:
        return albedo
    m = mat_id.index_select(0, sel)
    tex = ph.mat_tex.index_select(0, m)
    hx, hy, hz = (c.index_select(0, sel) for c in h)
    ax, ay, az = (c.index_select(0, sel).abs() for c in q)
    fx = (ax >= ay) & (ax >= az)
    fy = ~fx & (ay >= az)
    a = torch.where(fx, hz, hx)  # x face: (z, -y); y face: (x, z); z face: (x, -y)
    b = torch.where(fy, hz, -hy)
    pix = sample_photos(ph.atlas, photo.index_select(0, sel), a * tex[:, 0] + tex[:, 2], b * tex[:, 1] + tex[:, 3])
    pix = pix * ph.mat_gain.index_select(0, m).t()
    out = torch.stack(albedo)
    out.index_copy_(1, sel, pix)
    return out[0], out[1], out[2]


def _upsample2(x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear x2 upsampling of [..., H2, W2] to [..., height, width] (edge-clamped, explicit adds).

    Each output is ``0.75 * nearer + 0.25 * farther`` sample, written straight into the even and odd
    columns (then rows) of the result."""

    # Columns: even = 0.75 x[j] + 0.25 x[j-1], odd = 0.75 x[j] + 0.25 x[j+1] (indices clamped).
    a, q = 0.75 * x, 0.25 * x
    W2 = x.shape[-1]
    h = x.new_empty(*x.shape[:-1], 2 * W2)
    even, odd = h[..., 0::2], h[..., 1::2]
    torch.add(a[..., 1:], q[..., :-1], out=even[..., 1:])
    torch.add(a[..., :1], q[..., :1], out=even[..., :1])
    torch.add(a[..., :-1], q[..., 1:], out=odd[..., :-1])
    torch.add(a[..., -1:], q[..., -1:], out=odd[..., -1:])
    h = h[..., :width]
    # Rows, the same way.
    a, q = 0.75 * h, 0.25 * h
    H2 = h.shape[-2]
    v = h.new_empty(*h.shape[:-2], 2 * H2, h.shape[-1])
    even, odd = v[..., 0::2, :], v[..., 1::2, :]
    torch.add(a[..., 1:, :], q[..., :-1, :], out=even[..., 1:, :])
    torch.add(a[..., :1, :], q[..., :1, :], out=even[..., :1, :])
    torch.add(a[..., :-1, :], q[..., 1:, :], out=odd[..., :-1, :])
    torch.add(a[..., -1:, :], q[..., -1:, :], out=odd[..., -1:, :])
    return v[..., :height, :]


def _image_base(batch: int, planes: int, device: torch.device) -> Tensor:
    """[B,1,1] offsets ``b * planes``: a pixel's row in a [B*planes, ...] per-plane table."""
    return (torch.arange(batch, device=device) * planes)[:, None, None]


def _shade(albedo: tuple[Tensor, Tensor, Tensor], n: tuple[Tensor, Tensor, Tensor], img: "list[Tensor]", spec: Tensor,
           shadow: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Lambert key light + hemispheric ambient + a little Blinn specular (exponent 16 by squaring).

    ``img`` holds the per-pixel (or broadcast) image columns: intrinsics, light, up and half vectors,
    light and ambient colours.
    """
    ndl = torch.clamp(_dot(n, (img[4], img[5], img[6])), min=0.0)
    hemi = 0.6 + 0.4 * _dot(n, (img[7], img[8], img[9]))
    ndh = torch.clamp(_dot(n, (img[10], img[11], img[12])), min=0.0)
    ndh = ndh * ndh
    ndh = ndh * ndh
    ndh = ndh * ndh
    ndh = ndh * ndh
    if shadow is not None:
        ndl = ndl * (1.0 - shadow)
        hemi = hemi * (1.0 - 0.35 * shadow)
    glint = spec * ndh * ndl
    return tuple(albedo[c] * (img[13 + c] * ndl + img[16 + c] * hemi) + glint * img[13 + c] for c in range(3))  # type: ignore[return-value]


def _blur3(x: Tensor) -> Tensor:
    """Separable [1, 2, 1] / 4 blur over the last two axes with edge replication (explicit adds)."""
    xp = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    x = (xp[..., :-2] + xp[..., 2:]) * 0.25 + xp[..., 1:-1] * 0.5
    xp = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
    return (xp[..., :-2, :] + xp[..., 2:, :]) * 0.25 + xp[..., 1:-1, :] * 0.5


_NOISE_FIELDS: dict[tuple, Tensor] = {}
_NUM_NOISE = 8


def _noise_fields(height: int, width: int, device: torch.device) -> Tensor:
    """8 fixed noise images [8,3,H,W] in [-0.5, 0.5); each rendered image uses one, chosen by its key."""
    key = (height, width, str(device))
    if key not in _NOISE_FIELDS:
        if len(_NOISE_FIELDS) > 8:
            _NOISE_FIELDS.clear()
        n = torch.arange(_NUM_NOISE * 3 * height * width, dtype=torch.int64)
        h = hash32(n ^ 0x5BD1E995)
        _NOISE_FIELDS[key] = ((h >> 8).to(torch.float32) * (1.0 / 16777216.0) - 0.5).reshape(
            _NUM_NOISE, 3, height, width).to(device)
    return _NOISE_FIELDS[key]


def _post(rgb: Tensor, ids: Tensor, inputs: RenderInputs, out: Tensor) -> None:
    """Edge anti-aliasing, optional blur, exposure, sensor noise; float [3,B,H,W] in [0, 1] (changed in
    place) -> ``out`` uint8 [B,H,W,3].

    Anti-aliasing blends the 3x3 binomial blur into pixels on an object boundary only; the images
    that ask for a global blur are blurred as a sub-batch.
    """
    _, B, H, W = rgb.shape
    device = rgb.device
    edge = torch.zeros(B, H, W, dtype=torch.bool, device=device)
    dx = ids[:, :, 1:] != ids[:, :, :-1]
    dy = ids[:, 1:, :] != ids[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    ei = torch.nonzero(edge.reshape(-1)).squeeze(1)
    flat = rgb.reshape(3, -1)  # updated in place: every neighbour is read before the edge pixels are written
    if ei.numel():
        yy = torch.div(ei, W, rounding_mode="floor") % H
        xx = ei % W
        up = torch.where(yy > 0, -W, 0)
        down = torch.where(yy < H - 1, W, 0)
        left = torch.where(xx > 0, -1, 0)
        right = torch.where(xx < W - 1, 1, 0)
        centre = flat.index_select(1, ei)
        acc = 4.0 * centre
        for off, wgt in ((up, 2.0), (down, 2.0), (left, 2.0), (right, 2.0), (up + left, 1.0), (up + right, 1.0),
                         (down + left, 1.0), (down + right, 1.0)):
            acc = acc + wgt * flat.index_select(1, ei + off)
        flat.index_copy_(1, ei, centre * 0.2 + acc * (0.8 / 16.0))
    # Global blur and sensor noise on the images that ask for them: on the CPU in place, image by image
    # (no gather/scatter copies of whole images); on GPUs as one sub-batch.
    bi = torch.nonzero(inputs.blur > 0).squeeze(1)
    ni = torch.nonzero(inputs.noise > 0).squeeze(1)
    fields = _noise_fields(H, W, device) if ni.numel() else None
    which = (inputs.keys >> 5) & (_NUM_NOISE - 1)
    if device.type == "cpu":
        for b in bi.tolist():
            sub = rgb[:, b]
            sub.add_((_blur3(sub) - sub).mul_(inputs.blur[b]))
        for b, k in zip(ni.tolist(), which[ni].tolist()):
            rgb[:, b].add_(fields[k] * inputs.noise[b])
    else:
        if bi.numel():
            sub = rgb.index_select(1, bi)
            rgb.index_copy_(1, bi, sub + (_blur3(sub) - sub) * inputs.blur[bi][None, :, None, None])
        if ni.numel():
            noise = fields[which[ni]].transpose(0, 1)  # [3,n,H,W]
            rgb.index_copy_(1, ni, rgb.index_select(1, ni) + noise * inputs.noise[ni][None, :, None, None])
    # To 0..255 with rounding (the uint8 conversion truncates, which for positives rounds after + 0.5),
    # converted and interleaved into [B,H,W,3] in one copy; on the CPU image by image, so that the
    # passes over an image stay in cache.
    dst = out.permute(3, 0, 1, 2)
    step = 1 if device.type == "cpu" else B
    for lo in range(0, B, step):
        dst[:, lo:lo + step].copy_(rgb[:, lo:lo + step].clamp_(0.0, 1.0).mul_(255.0).add_(0.5))
