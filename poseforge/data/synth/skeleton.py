"""Articulated figures as data: joints, primitives and keypoints, compiled to tensors once.

A :class:`FigureSpec` lists joints (parent, rest offset, rest rotation, scale group), primitives
attached to joints and keypoints attached to joints. :class:`CompiledFigure` turns it into tensors and
provides batched forward kinematics (one step per tree level, never per joint or per figure) and the
construction of world-space primitives and keypoints for any number of figures at once.

Left/right symmetry is written once: :func:`mirror_x` flips a left-side entry into its right twin.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
import torch
from torch import Tensor

from .ops import deg, euler_zxy, matmul3, matvec3
from .shapes import CONE, Prims

__all__ = ["Joint", "Part", "Keypoint", "FigureSpec", "CompiledFigure", "mirror_x", "PoseTensors"]

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Joint:
    """A joint: ``offset`` from its parent in the parent's frame (metres, canonical figure), scaled
    per axis by the figure's ``group`` scale; ``rest`` Euler angles (degrees, x/y/z, applied as
    Rz Rx Ry) orient its frame before the pose rotation."""

    name: str
    parent: str | None
    offset: Vec3 = (0.0, 0.0, 0.0)
    group: str = "unit"
    rest: Vec3 = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Part:
    """A round-cone primitive in ``joint``'s frame: ends ``a``/``b`` (metres, scaled by ``group``),
    radii ``ra``/``rb`` (scaled by ``rgroup``), squashed per axis by ``flat``.

    ``part`` names the body-part class of bare skin; ``mat`` the material slot. ``layers`` are up to
    two clothing roles that cover it (first match wins) on the axial range the figure gives the role;
    ``s_axis``/``s_len``/``s_start`` define the axial coordinate s (0 at ``s_start`` along ``s_axis``,
    1 one ``s_len`` further). ``feature`` names a per-figure switch that enables the part.
    """

    name: str
    joint: str
    a: Vec3
    b: Vec3 | None = None
    ra: float = 0.05
    rb: float | None = None
    flat: Vec3 = (1.0, 1.0, 1.0)
    group: str = "unit"
    rgroup: str = "unit"
    part: str = "Background"
    mat: str = "skin"
    layers: tuple[str, ...] = ()
    s_axis: Vec3 = (0.0, -1.0, 0.0)
    s_len: float = 1.0
    s_start: float = 0.0
    feature: str | None = None
    side: str = "C"  # "L", "R" or "C": which side-specific class a layer role maps to


@dataclass(frozen=True)
class Keypoint:
    """A labelled point in ``joint``'s frame (scaled by ``group``). ``slack`` (metres, scaled by
    ``rgroup``) is how far in front of it the figure's own surface may lie while it still counts as
    visible: the joint's depth inside the limb for joint centres, a few millimetres for surface points."""

    name: str
    joint: str
    offset: Vec3 = (0.0, 0.0, 0.0)
    group: str = "unit"
    slack: float = 0.01
    rgroup: str = "unit"


_LEFT_RIGHT = (("left_", "right_"), ("l_", "r_"), ("Left_", "Right_"))


def _swap_name(name: str) -> str:
    for left, right in _LEFT_RIGHT:
        if name.startswith(left):
            return right + name[len(left):]
        if name.startswith(right):
            return left + name[len(right):]
    return name


def mirror_x(item: "Joint | Part | Keypoint") -> "Joint | Part | Keypoint":
    """The mirror twin of a left (or right) entry: x negated, names and classes swapped."""
    flip = lambda v: None if v is None else (-v[0], v[1], v[2])
    if isinstance(item, Joint):
        return replace(item, name=_swap_name(item.name), parent=None if item.parent is None else _swap_name(item.parent),
                       offset=flip(item.offset), rest=(item.rest[0], -item.rest[1], -item.rest[2]))
    if isinstance(item, Part):
        side = {"L": "R", "R": "L"}.get(item.side, item.side)
        return replace(item, name=_swap_name(item.name), joint=_swap_name(item.joint), a=flip(item.a), b=flip(item.b),
                       part=_swap_name(item.part), s_axis=flip(item.s_axis), side=side)
    return replace(item, name=_swap_name(item.name), joint=_swap_name(item.joint), offset=flip(item.offset))


@dataclass(frozen=True)
class FigureSpec:
    """Joints (parents before children), parts, keypoints and the names of the scale groups,
    radius groups, features, material slots and clothing roles the figure uses."""

    joints: tuple[Joint, ...]
    parts: tuple[Part, ...]
    keypoints: tuple[Keypoint, ...]
    part_classes: tuple[str, ...]
    mat_slots: tuple[str, ...]
    roles: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    groups: tuple[str, ...] = ("unit",)
    rgroups: tuple[str, ...] = ("unit",)
    free_limbs: tuple[str, ...] = ()  # joints whose subtrees do not rest on the floor (arms)


@dataclass
class PoseTensors:
    """World-space result of forward kinematics for N figures: joint rotations [N,J,3,3] and
    positions [N,J,3]."""

    rot: Tensor
    pos: Tensor


class CompiledFigure:
    """A :class:`FigureSpec` as tensors on one device."""

    def __init__(self, spec: FigureSpec, device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        dev = self.device
        f32 = dict(device=dev, dtype=torch.float32)
        i64 = dict(device=dev, dtype=torch.int64)
        self.joint_index = {j.name: i for i, j in enumerate(spec.joints)}
        if len(self.joint_index) != len(spec.joints):
            raise ValueError("duplicate joint names")
        groups = {g: i for i, g in enumerate(spec.groups)}
        rgroups = {g: i for i, g in enumerate(spec.rgroups)}
        features = {f: i for i, f in enumerate(spec.features)}
        classes = {c: i for i, c in enumerate(spec.part_classes)}
        slots = {m: i for i, m in enumerate(spec.mat_slots)}
        roles = {r: i for i, r in enumerate(spec.roles)}
        self.num_joints = len(spec.joints)
        parents = []
        depth = []
        for j in spec.joints:
            if j.parent is None:
                parents.append(-1)
                depth.append(0)
            else:
                p = self.joint_index[j.parent]
                if p >= len(parents):
                    raise ValueError(f"joint {j.name}: parent {j.parent} must come first")
                parents.append(p)
                depth.append(depth[p] + 1)
        self.parent = torch.tensor(parents, **i64)
        self.levels = []
        for level in range(1, max(depth) + 1):
            idx = [i for i, d in enumerate(depth) if d == level]
            self.levels.append((torch.tensor(idx, **i64), torch.tensor([parents[i] for i in idx], **i64)))
        self.roots = torch.tensor([i for i, d in enumerate(depth) if d == 0], **i64)
        self.joint_offset = torch.tensor([j.offset for j in spec.joints], **f32)
        self.joint_group = torch.tensor([groups[j.group] for j in spec.joints], **i64)
        self.joint_rest = euler_zxy(torch.tensor([[deg(a) for a in j.rest] for j in spec.joints], **f32))

        parts = spec.parts
        self.num_parts = len(parts)
        flat = torch.tensor([p.flat for p in parts], **f32)
        a = torch.tensor([p.a for p in parts], **f32)
        b = torch.tensor([p.b if p.b is not None else p.a for p in parts], **f32)
        self.part_joint = torch.tensor([self.joint_index[p.joint] for p in parts], **i64)
        self.part_flat = flat
        self.part_a = a
        self.part_b = b
        self.part_ra = torch.tensor([p.ra for p in parts], **f32)
        self.part_rb = torch.tensor([p.rb if p.rb is not None else p.ra for p in parts], **f32)
        self.part_group = torch.tensor([groups[p.group] for p in parts], **i64)
        self.part_rgroup = torch.tensor([rgroups[p.rgroup] for p in parts], **i64)
        self.part_class = torch.tensor([classes[p.part] for p in parts], **i64)
        self.part_mat = torch.tensor([slots[p.mat] for p in parts], **i64)
        self.part_feature = torch.tensor([features[p.feature] if p.feature else -1 for p in parts], **i64)
        self.part_side = torch.tensor([{"C": 0, "L": 1, "R": 2}[p.side] for p in parts], **i64)
        layer_role = [[roles[r] for r in p.layers] + [-1] * (2 - len(p.layers)) for p in parts]
        self.part_layer_role = torch.tensor(layer_role, **i64)
        axis = torch.tensor([p.s_axis for p in parts], **f32)
        self.part_s_axis = axis / torch.tensor([p.s_len for p in parts], **f32)[:, None]
        self.part_s_start = torch.tensor([p.s_start / p.s_len for p in parts], **f32)
        self.part_is_sphere = torch.tensor([p.b is None for p in parts], device=dev)
        free = set(spec.free_limbs)
        for j in spec.joints:  # parents come first, so one pass collects whole subtrees
            if j.parent in free:
                free.add(j.name)
        self.part_support = torch.tensor([p.joint not in free for p in parts], device=dev)

        kps = spec.keypoints
        self.num_keypoints = len(kps)
        self.kp_joint = torch.tensor([self.joint_index[k.joint] for k in kps], **i64)
        self.kp_offset = torch.tensor([k.offset for k in kps], **f32)
        self.kp_group = torch.tensor([groups[k.group] for k in kps], **i64)
        self.kp_slack = torch.tensor([k.slack for k in kps], **f32)
        self.kp_rgroup = torch.tensor([rgroups[k.rgroup] for k in kps], **i64)
        self.keypoint_names = tuple(k.name for k in kps)
        self.part_names = tuple(p.name for p in parts)

    def forward_kinematics(self, local_rot: Tensor, gscale: Tensor, root_rot: Tensor, root_pos: Tensor) -> PoseTensors:
        """World joint frames of N figures.

        ``local_rot`` [N,J,3,3] pose rotations (applied after each joint's rest rotation),
        ``gscale`` [N,G,3] per-group axis scales, ``root_rot`` [N,3,3] and ``root_pos`` [N,3] place
        the root joint(s).
        """
        N = local_rot.shape[0]
        local = matmul3(self.joint_rest[None], local_rot)
        offsets = self.joint_offset[None] * gscale[:, self.joint_group]  # [N,J,3]
        rot = torch.empty(N, self.num_joints, 3, 3, device=local_rot.device, dtype=local_rot.dtype)
        pos = torch.empty(N, self.num_joints, 3, device=local_rot.device, dtype=local_rot.dtype)
        rot[:, self.roots] = matmul3(root_rot[:, None], local[:, self.roots])
        pos[:, self.roots] = root_pos[:, None] + matvec3(root_rot[:, None], offsets[:, self.roots])
        for idx, par in self.levels:
            parent_rot = rot[:, par]
            rot[:, idx] = matmul3(parent_rot, local[:, idx])
            pos[:, idx] = pos[:, par] + matvec3(parent_rot, offsets[:, idx])
        return PoseTensors(rot, pos)

    def part_geometry(self, pose: PoseTensors, gscale: Tensor, rscale: Tensor) -> dict[str, Tensor]:
        """Per-figure primitive geometry [N,Q,...]: rot, scale, pos, shape-space a/b, ra/rb."""
        j = self.part_joint
        g = gscale[:, self.part_group]  # [N,Q,3]
        r = rscale[:, self.part_rgroup]  # [N,Q]
        a = self.part_a[None] * g / self.part_flat[None]
        b = self.part_b[None] * g / self.part_flat[None]
        ra = self.part_ra[None] * r
        rb = self.part_rb[None] * r
        N = gscale.shape[0]
        return {
            "rot": pose.rot[:, j],
            "pos": pose.pos[:, j],
            "scale": self.part_flat[None].expand(N, -1, -1),
            "a": a, "b": b, "ra": ra, "rb": rb,
            "s_axis": self.part_s_axis[None] / g[..., 1:2],
        }

    def lowest_point(self, geom: dict[str, Tensor], enabled: Tensor) -> Tensor:
        """World y of the lowest surface point of each figure [N] (exact for the spherical caps).

        Pass ``enabled & self.part_support`` to ground a figure on its body and legs, not its hands.
        """
        rot, scale = geom["rot"], geom["scale"]
        # Extent of a unit shape-space sphere along world y: |row 1 of rot @ diag(scale)|.
        ext = torch.sqrt(rot[..., 1, 0] ** 2 * scale[..., 0] ** 2 + rot[..., 1, 1] ** 2 * scale[..., 1] ** 2
                         + rot[..., 1, 2] ** 2 * scale[..., 2] ** 2)
        ya = matvec3(rot, geom["a"] * scale)[..., 1] + geom["pos"][..., 1] - geom["ra"] * ext
        yb = matvec3(rot, geom["b"] * scale)[..., 1] + geom["pos"][..., 1] - geom["rb"] * ext
        low = torch.where(enabled, torch.minimum(ya, yb), float("inf"))
        return low.amin(dim=1)

    def keypoints(self, pose: PoseTensors, gscale: Tensor, rscale: Tensor) -> tuple[Tensor, Tensor]:
        """World keypoints [N,K,3] and their visibility slack [N,K]."""
        j = self.kp_joint
        off = self.kp_offset[None] * gscale[:, self.kp_group]
        pts = matvec3(pose.rot[:, j], off) + pose.pos[:, j]
        return pts, self.kp_slack[None] * rscale[:, self.kp_rgroup]

    def enabled(self, features: Tensor) -> Tensor:
        """[N,Q] which parts exist for each figure, from its feature switches [N,F]."""
        f = self.part_feature
        on = torch.ones(features.shape[0], self.num_parts, dtype=torch.bool, device=features.device)
        has = f >= 0
        return torch.where(has[None], features[:, torch.clamp(f, min=0)], on)


def build_prims(fig: CompiledFigure, geom: dict[str, Tensor], enabled: Tensor, image: Tensor, instance: Tensor,
                mat_base: Tensor, role_cls: Tensor, role_mat: Tensor, role_lo: Tensor, role_hi: Tensor,
                side_class: Tensor, valid: Tensor) -> Prims:
    """Flatten N figures' parts into a :class:`Prims` list, keeping only enabled parts of valid figures.

    ``image``/``instance``/``mat_base`` [N] per figure; clothing roles per figure: ``role_cls``,
    ``role_mat`` (slot), ``role_lo``, ``role_hi`` [N,R]. ``side_class`` [3,C] maps a class to its
    centre/left/right variant (a role's class is given for the left side).
    """
    keep = enabled & valid[:, None]
    n_idx, q_idx = torch.nonzero(keep, as_tuple=True)
    role = fig.part_layer_role[q_idx]  # [M,2]
    has_role = role >= 0
    rc = torch.clamp(role, min=0)
    side = fig.part_side[q_idx]
    cls = role_cls[n_idx[:, None], rc]
    cls = side_class[side[:, None], cls]
    lo = torch.where(has_role, role_lo[n_idx[:, None], rc], 0.0)
    hi = torch.where(has_role, role_hi[n_idx[:, None], rc], 0.0)
    base = mat_base[n_idx]
    M = int(n_idx.shape[0])
    pick = lambda name: geom[name][n_idx, q_idx]
    return Prims(
        image=image[n_idx],
        kind=torch.full((M,), CONE, dtype=torch.int64, device=enabled.device),
        rot=pick("rot"), scale=pick("scale"), pos=pick("pos"), a=pick("a"), b=pick("b"), ra=pick("ra"), rb=pick("rb"),
        instance=instance[n_idx],
        part=fig.part_class[q_idx],
        mat=base + fig.part_mat[q_idx],
        layer_cls=torch.where(has_role, cls, 0),
        layer_mat=base[:, None] + torch.where(has_role, role_mat[n_idx[:, None], rc], 0),
        layer_lo=lo, layer_hi=hi,
        s_axis=pick("s_axis"),
        s_off=-fig.part_s_start[q_idx],
    )

