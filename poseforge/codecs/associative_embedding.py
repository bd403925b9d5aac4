"""Associative embedding (Newell et al. 2017; HigherHRNet, LitePose): every person's keypoints in one heatmap
per keypoint type plus a tag map per keypoint type; decoding groups the heatmap peaks whose tags agree.

Encode (``encode(batch)``, batched torch, no loop over people or keypoints):

* ``heatmaps [B, K, H, W]``: a Gaussian (``sigma`` map pixels, 3-sigma window, peak 1 at the keypoint's
  cell) per labeled keypoint, the maximum where people overlap; with ``hr_heatmaps`` also
  ``heatmaps_hr [B, K, 2H, 2W]`` (HigherHRNet / LitePose's 1/2-scale maps, same sigma in their pixels);
* ``keypoint_indices [B, N, K]`` (the keypoint's cell ``y * W + x`` in the 1/4-scale map, where its tag is
  read) and ``keypoint_weights [B, N, K]`` (1: labeled, in a valid person, inside the map);
* with a ``mask`` entry in the batch (``[B, h, w]`` at any resolution, 1 where the loss counts and 0 in
  ignored regions such as crowds, HigherHRNet's convention): ``heatmap_mask [B, H, W]`` (and
  ``heatmap_mask_hr``), area-resized and thresholded at 0.5; the heatmap loss is 0 there.

The loss registered under this codec's name (:class:`poseforge.models.losses.AssociativeEmbeddingLoss`)
adds the heatmap MSE of each resolution and the tags' pull / push terms.

Decode (``decode_predictions(outputs)``), the rule of HigherHRNet / LitePose and mmpose 1.3.2's
``AssociativeEmbedding.batch_decode``:

1. with 1/2-scale maps, the 1/4-scale heatmaps and tags are upsampled to them (bilinear, half-pixel
   centres) and the two heatmaps averaged (HigherHRNet's multi-resolution aggregation);
2. peaks: ``nms_kernel`` x ``nms_kernel`` max-pool NMS, the top ``max_people`` of each keypoint type with
   their tags (only the cells above ``detection_threshold`` are tested: nothing else is grouped);
3. grouping: :func:`poseforge.runtime.grouping.match_tags` per image - joints in ``joint_order``, each joint's
   candidates above ``detection_threshold`` assigned to the people so far by
   ``scipy.optimize.linear_sum_assignment`` on ``round(tag distance) * 100 - score`` (``use_detection_val``),
   joining when the distance is below ``tag_threshold``; the first ``max_people`` people are kept;
4. ``adjust``: a quarter-pixel shift of each grouped keypoint towards its higher neighbour (mmpose's
   ``refine_keypoints`` border rules); ``refine``: each person's missing keypoints filled at the cell
   minimizing ``round(|tag - mean tag|) * 100 - heatmap`` and scored by the heatmap there.

Steps 2-4 run where the outputs are: CPU outputs through the numpy code of :mod:`poseforge.runtime.grouping`
(the exported models' runtime runs it too; torch's per-operation overhead on these small arrays is several
times numpy's, and its missing-keypoint search skips blocks of cells that provably cannot win), other devices
through this module's torch version of the same steps, batched over images, people and keypoints. Both give
the same people (tested against each other and against mmpose's decode).

People come best first by instance score, the mean of the grouped keypoint scores (before filling).
Coordinates are model-input pixels with pixel centres at integers: map cell ``i`` is input pixel
``(i + 0.5) * stride - 0.5``. Tags are ``[B, L * K, H, W]`` with channel ``l * K + k`` (mmpose's layout); the
flip test concatenates the flipped tags (``L`` doubles, :meth:`AssociativeEmbedding.merge_flip`), as
HigherHRNet and mmpose do, and averages the heatmaps.

Deliberate differences from mmpose: its keypoints are ``(cell + shift) * stride`` with a configurable
``decode_center_shift`` added to grouped keypoints only (0.5 in its COCO config); here every keypoint is in the
pixel-centre convention above. mmpose keys people by their first tag value, so two new people with exactly
equal tags merge; here they stay two people.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PoseforgeError
from ..outputs import HeatmapsTags, Predictions
from ..registry import CODECS
from .base import Codec, as_tensor, check_flip_index, check_kernel_size, check_positive, check_size

__all__ = ["AssociativeEmbedding", "max_filter"]

_FILL_BLOCK = 1 << 18  # elements of one [Q, L, HW] block of the missing-keypoint search on the CPU


def _check_finite(value: Any, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not math.isfinite(out):
        raise PoseforgeError(f"{what} must be a finite number, got {value!r}")
    return out


def max_filter(maps: Tensor, kernel: int) -> Tensor:
    """``F.max_pool2d(maps, kernel, 1, kernel // 2)`` of ``maps [..., H, W]`` as separable shifted maxima: the
    same values, an order of magnitude faster on CPU than torch's stride-1 pooling kernel."""
    r = kernel // 2
    if r == 0:
        return maps
    h, w = maps.shape[-2:]
    padded = F.pad(maps, (r, r, r, r), value=-math.inf)
    rows = padded[..., :, 0:w]
    for dx in range(1, kernel):  # (kernel offsets, not pixels)
        rows = torch.maximum(rows, padded[..., :, dx:dx + w])
    out = rows[..., 0:h, :]
    for dy in range(1, kernel):
        out = torch.maximum(out, rows[..., dy:dy + h, :])
    return out


def _tag_cost(tags: Tensor, centre: Tensor, heat: Tensor) -> Tensor:
    """``round(|tags - centre|) * 100 - heat`` of tags ``[..., L, n]`` and centres ``[..., L, 1]``: the cost the
    missing keypoints are filled by, float32 op for op as mmpose's numpy (and the runtime's): the distance
    summed over ``L`` in order, and ``|x|`` for ``L = 1`` (``sqrt(x * x)`` is ``|x|`` exactly in binary floating
    point)."""
    diff = tags - centre
    if diff.shape[-2] == 1:
        dist = diff[..., 0, :].abs_()
    else:
        dist = diff[..., 0, :].square()
        for d in range(1, diff.shape[-2]):  # (tag dimensions, 1-4)
            dist += diff[..., d, :].square()
        dist = dist.sqrt_()
    return dist.round_().mul_(100).sub_(heat)


def _fill_cells(heat_flat: Tensor, tag_maps: Tensor, bi: Tensor, ki: Tensor, centre: Tensor) -> Tensor:
    """The first cell minimizing ``round(|tag - centre|) * 100 - heat`` (:func:`_tag_cost`) of each query: map
    ``(bi, ki)`` of ``heat_flat [B, K, HW]`` / ``tag_maps [B, L, K, HW]``, centre ``[Q, L]``; returns ``[Q]``.
    Every cell of each query's map, queries in blocks: on an accelerator one block is a few kernels over all
    missing keypoints (the CPU path, :func:`poseforge.runtime.grouping.fill_missing`, also skips blocks of cells
    its bounds rule out)."""
    dims, hw = tag_maps.shape[1], tag_maps.shape[3]
    layer = torch.arange(dims, device=bi.device)
    best = torch.empty_like(bi)
    # cache-sized blocks on the CPU (the tests run this path there), larger ones on an accelerator
    step = max(1, (_FILL_BLOCK if bi.device.type == "cpu" else 1 << 24) // (dims * hw))
    for s in range(0, bi.numel(), step):  # blocks bound the memory, not a per-keypoint loop
        qb, qk = bi[s:s + step], ki[s:s + step]
        picked = tag_maps[qb[:, None], layer, qk[:, None]]  # [q, L, HW]
        cost = _tag_cost(picked, centre[s:s + step, :, None], heat_flat[qb, qk])
        best[s:s + step] = cost.min(1).indices  # the first minimal index, as np.argmin
    return best


def _block_bounds(heat_flat: Tensor, tag_maps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`poseforge.runtime.grouping.block_bounds` in torch, batched: per block of ``FILL_BLOCK_CELLS`` cells
    of ``heat_flat [B, K, HW]`` / ``tag_maps [B, L, K, HW]``, the heat maximum ``[B, K, NB]`` and the tag
    minimum and maximum ``[B, L, K, NB]`` (NaN propagates)."""
    from ..runtime.grouping import FILL_BLOCK_CELLS as bs

    nb, tail = divmod(heat_flat.shape[-1], bs)

    def reduce(t: Tensor, how: str) -> Tensor:
        parts = [getattr(t[..., :nb * bs].unflatten(-1, (nb, bs)), how)(-1)] if nb else []
        if tail:
            parts.append(getattr(t[..., nb * bs:], how)(-1, keepdim=True))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    return reduce(heat_flat, "amax"), reduce(tag_maps, "amin"), reduce(tag_maps, "amax")


@CODECS.register("associative-embedding")
class AssociativeEmbedding(Codec):
    """Associative-embedding heatmaps + tags for bottom-up multi-person pose (see the module doc).

    Args:
        input_size: model input ``(w, h)``.
        heatmap_size: the 1/4-scale maps ``(W, H)`` (default ``ceil(input / 4)``); 1/2-scale maps are twice it.
        sigma: Gaussian sigma in map pixels (LitePose / HigherHRNet: 2 at both resolutions).
        hr_heatmaps: encode (and expect in outputs) 1/2-scale ``heatmaps_hr`` as well.
        max_people: peaks per keypoint type and most people per image (LitePose / mmpose: 30).
        detection_threshold: keypoint candidates must score above it (0.1).
        tag_threshold: largest tag distance of a keypoint to the person it joins (1.0).
        nms_kernel: max-pool NMS window (5).
        use_detection_val: assignment cost ``round(distance) * 100 - score`` (else the distance).
        adjust: quarter-pixel shift of grouped keypoints towards the higher neighbour.
        refine: fill each person's missing keypoints from its mean tag.
        joint_order: the order joints are grouped in (default index order; mmpose's COCO config:
            ``[0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16]``).
    """

    name = "associative-embedding"
    output_type = HeatmapsTags

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int] | None = None, sigma: float = 2.0,
                 hr_heatmaps: bool = False, max_people: int = 30, detection_threshold: float = 0.1,
                 tag_threshold: float = 1.0, nms_kernel: int = 5, use_detection_val: bool = True,
                 adjust: bool = True, refine: bool = True, joint_order: Sequence[int] | None = None) -> None:
        self.input_size = check_size(input_size, "input_size")
        self.heatmap_size = (check_size(heatmap_size, "heatmap_size") if heatmap_size is not None else
                             (math.ceil(self.input_size[0] / 4), math.ceil(self.input_size[1] / 4)))
        self.sigma = check_positive(sigma, "sigma")
        self.hr_heatmaps = bool(hr_heatmaps)
        if isinstance(max_people, bool) or not isinstance(max_people, (int, np.integer)) or max_people < 1:
            raise PoseforgeError(f"max_people must be a positive integer, got {max_people!r}")
        self.max_people = int(max_people)
        self.detection_threshold = _check_finite(detection_threshold, "detection_threshold")
        self.tag_threshold = check_positive(tag_threshold, "tag_threshold")
        self.nms_kernel = check_kernel_size(nms_kernel, "nms_kernel")
        self.use_detection_val, self.adjust, self.refine = bool(use_detection_val), bool(adjust), bool(refine)
        if joint_order is not None:
            order = [int(j) for j in joint_order]
            if sorted(order) != list(range(len(order))):
                raise PoseforgeError(f"joint_order must be a permutation of range(K), got {list(joint_order)}")
            joint_order = order
        self.joint_order: list[int] | None = joint_order

    @property
    def hr_size(self) -> tuple[int, int]:
        """``(W, H)`` of the 1/2-scale maps."""
        return (2 * self.heatmap_size[0], 2 * self.heatmap_size[1])

    def _levels(self) -> list[tuple[str, tuple[int, int]]]:
        levels = [("", self.heatmap_size)]
        return levels + [("_hr", self.hr_size)] if self.hr_heatmaps else levels

    # ----------------------------------------------------------------------------------------- encode
    def encode_sample(self, sample: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Targets of a batch: ``keypoints [B, N, K, 2]`` (input pixels), ``visibility [B, N, K]``, optional
        ``valid [B, N]`` and ``mask [B, h, w]`` (see the module doc)."""
        missing = [k for k in ("keypoints", "visibility") if k not in sample]
        if missing:
            raise PoseforgeError(f"{self.name} codec: the samples carry no {', '.join(missing)}")
        kp = as_tensor(sample["keypoints"], "keypoints")
        if kp.ndim != 4 or kp.shape[-1] != 2:
            raise PoseforgeError(f"{self.name} codec: keypoints must be [B, N, K, 2], got {list(kp.shape)}")
        kp = kp.to(torch.promote_types(kp.dtype, torch.float32)) if kp.is_floating_point() else kp.float()
        vis = as_tensor(sample["visibility"], "visibility", device=kp.device)
        if tuple(vis.shape) != tuple(kp.shape[:3]):
            raise PoseforgeError(f"{self.name} codec: visibility must be {list(kp.shape[:3])} ([B, N, K]), got {list(vis.shape)}")
        use = (vis > 0) & kp.isfinite().all(-1)
        if sample.get("valid") is not None:
            valid = as_tensor(sample["valid"], "valid", device=kp.device)
            if tuple(valid.shape) != tuple(kp.shape[:2]):
                raise PoseforgeError(f"{self.name} codec: valid must be {list(kp.shape[:2])} ([B, N]), got {list(valid.shape)}")
            use = use & valid.bool()[..., None]
        kp = torch.where(use[..., None], kp, torch.zeros_like(kp))
        out: dict[str, Tensor] = {}
        for suffix, size in self._levels():
            heatmaps, centre, inside = self._gaussians(kp, use, size)
            out["heatmaps" + suffix] = heatmaps
            if not suffix:  # tags are read at the 1/4-scale cells only
                weights = use & inside
                out["keypoint_indices"] = torch.where(weights, centre[..., 1] * size[0] + centre[..., 0],
                                                      torch.zeros_like(centre[..., 0]))
                out["keypoint_weights"] = weights.float()
            if sample.get("mask") is not None:
                out["heatmap_mask" + suffix] = self._resize_mask(sample["mask"], size, kp.device)
        return out

    def _gaussians(self, kp: Tensor, use: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Heatmaps ``[B, K, H, W]`` of keypoints ``[B, N, K, 2]`` (the maximum over people), each keypoint's
        cell ``[B, N, K, 2]`` (x, y long) and whether it is on the map ``[B, N, K]``.

        Every keypoint writes its (2r+1)^2 window with one ``scatter_reduce(amax)``: [B, N, K, H, W] dense
        Gaussians would take gigabytes for 30 people at 256x256."""
        b, _, k, _ = kp.shape
        w, h = size
        device = kp.device
        stride = torch.tensor([self.input_size[0] / w, self.input_size[1] / h], dtype=kp.dtype, device=device)
        centre = torch.floor((kp + 0.5) / stride).long()  # nearest cell: round((kp + 0.5) / stride - 0.5)
        inside = ((centre >= 0) & (centre < torch.tensor([w, h], device=device))).all(-1)
        draw = use & inside
        r = int(3 * self.sigma)  # mmpose / HigherHRNet: the 3-sigma window around the cell
        offsets = torch.arange(-r, r + 1, device=device)
        profile = torch.exp(-(offsets.float() ** 2) / (2 * self.sigma ** 2))
        window = profile[:, None] * profile[None, :]  # [S, S], peak 1
        ys = centre[..., 1, None] + offsets  # [B, N, K, S]
        xs = centre[..., 0, None] + offsets
        ok = (((ys >= 0) & (ys < h))[..., :, None] & ((xs >= 0) & (xs < w))[..., None, :]) & draw[..., None, None]
        maps = torch.arange(b * k, device=device).reshape(b, 1, k, 1, 1)  # (image, keypoint type) map index
        flat = (maps * h + ys[..., :, None]) * w + xs[..., None, :]  # [B, N, K, S, S]
        values = torch.where(ok, window, torch.zeros((), device=device))
        heatmaps = torch.zeros(b * k * h * w, device=device)
        if values.numel():
            heatmaps.scatter_reduce_(0, torch.where(ok, flat, 0).reshape(-1), values.reshape(-1), "amax")
        return heatmaps.reshape(b, k, h, w), centre, inside

    @staticmethod
    def _resize_mask(mask: Any, size: tuple[int, int], device: torch.device) -> Tensor:
        m = as_tensor(mask, "mask", device=device)
        if m.ndim != 3:
            raise PoseforgeError(f"mask must be [B, h, w] (1: use, 0: ignore), got {list(m.shape)}")
        w, h = size
        m = m.float()
        if tuple(m.shape[-2:]) != (h, w):
            m = F.adaptive_avg_pool2d(m[:, None], (h, w))[:, 0] if m.shape[-1] >= w and m.shape[-2] >= h else \
                F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return (m >= 0.5).float()

    # ----------------------------------------------------------------------------------------- decode
    def _maps(self, outputs: HeatmapsTags) -> tuple[Tensor, Tensor]:
        """Float heatmaps ``[B, K, H, W]`` and tags ``[B, L*K, H, W]`` to group: the 1/4-scale ones, or with
        1/2-scale heatmaps both brought to that size and the heatmaps averaged (HigherHRNet's rule)."""
        if not isinstance(outputs, HeatmapsTags):
            raise PoseforgeError(f"{self.name} codec: expected HeatmapsTags, got {type(outputs).__name__}")
        heat, tags = outputs.heatmaps.detach().float(), outputs.tags.detach().float()
        w, h = self.heatmap_size
        if heat.ndim != 4 or tuple(heat.shape[-2:]) != (h, w):
            raise PoseforgeError(f"{self.name} codec: heatmaps must be [B, K, {h}, {w}], got {list(heat.shape)}")
        k = heat.shape[1]
        if tags.ndim != 4 or tags.shape[0] != heat.shape[0] or tuple(tags.shape[-2:]) != (h, w) or k == 0 \
                or tags.shape[1] % k or tags.shape[1] == 0:
            raise PoseforgeError(f"{self.name} codec: tags must be [B, L*K, {h}, {w}] with K = {k}, got {list(tags.shape)}")
        hr = getattr(outputs, "heatmaps_hr", None)
        if (hr is not None) != self.hr_heatmaps:
            raise PoseforgeError(f"{self.name} codec: hr_heatmaps is {self.hr_heatmaps} but the outputs "
                                 f"{'have' if hr is not None else 'lack'} heatmaps_hr")
        if hr is None:  # (contiguous: the decode reads them through flat views)
            return heat.contiguous(), tags.contiguous()
        hw, hh = self.hr_size
        if tuple(hr.shape) != (heat.shape[0], k, hh, hw):
            raise PoseforgeError(f"{self.name} codec: heatmaps_hr must be {[heat.shape[0], k, hh, hw]}, got {list(hr.shape)}")
        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, size=(hh, hw), mode="bilinear", align_corners=False)

        # (in place: the same float32 sum and halving, without two more map-sized temporaries)
        return up(heat).add_(hr.detach().float()).mul_(0.5), up(tags)

    def decode_predictions(self, outputs: HeatmapsTags) -> Predictions:
        """Every person of each image: ``keypoints [B, N, K, 2]`` input pixels, ``scores``, ``valid``,
        ``instance_scores`` (N = the most people found in one image, at least 1).

        CPU outputs are grouped by the numpy code of :mod:`poseforge.runtime.grouping` (the same rule; torch's
        per-operation overhead on the small arrays of grouping is several times numpy's), other devices by the
        torch steps of :meth:`_decode_on_device` (the assignment itself runs on the host either way)."""
        heat, tags = self._maps(outputs)
        k = heat.shape[1]
        if self.joint_order is not None and len(self.joint_order) != k:
            raise PoseforgeError(f"{self.name} codec: joint_order has {len(self.joint_order)} entries for {k} "
                                 "keypoints")
        if heat.device.type == "cpu":
            return self._decode_on_host(heat, tags)
        return self._decode_on_device(heat, tags)

    def _options(self) -> dict[str, Any]:
        return {"max_people": self.max_people, "detection_threshold": self.detection_threshold,
                "tag_threshold": self.tag_threshold, "joint_order": self.joint_order, "nms_kernel": self.nms_kernel,
                "use_detection_val": self.use_detection_val, "adjust": self.adjust, "refine": self.refine}

    def _decode_on_host(self, heat: Tensor, tags: Tensor) -> Predictions:
        """:meth:`decode_predictions` of CPU maps (from :meth:`_maps`) with :func:`~poseforge.runtime.grouping.
        group_image`, image by image; the block bounds of the filling step come from torch's fast reductions."""
        from ..runtime.grouping import group_image

        b, k, h, w = heat.shape
        dims = tags.shape[1] // k
        heat_flat, tag_maps = heat.reshape(b, k, h * w), tags.reshape(b, dims, k, h * w)
        heat_np, tags_np = heat.numpy(), tag_maps.numpy()

        def bounds(i: int) -> Callable[[np.ndarray], tuple[np.ndarray, ...]]:
            def of(types: np.ndarray) -> tuple[np.ndarray, ...]:  # image i's maps of these keypoint types
                # (all of the image's maps: reducing views beats copying the rows out first)
                hmax, tmin, tmax = (t[0].numpy() for t in _block_bounds(heat_flat[i:i + 1], tag_maps[i:i + 1]))
                return hmax[types], tmin[:, types], tmax[:, types]
            return of

        options = self._options()
        people = [group_image(heat_np[i], tags_np[i], **options, bounds=bounds(i)) for i in range(b)]
        n = max([1] + [len(p[0]) for p in people])
        keypoints, scores = np.zeros((b, n, k, 2), np.float32), np.zeros((b, n, k), np.float32)
        valid, instance_scores = np.zeros((b, n), bool), np.zeros((b, n), np.float32)
        stride = np.array([self.input_size[0] / w, self.input_size[1] / h])
        for i, (points, point_scores, person_scores) in enumerate(people):  # (one copy per image)
            p = len(points)
            keypoints[i, :p] = (points + 0.5) * stride - 0.5
            scores[i, :p], valid[i, :p], instance_scores[i, :p] = point_scores, True, person_scores
        return Predictions(torch.from_numpy(keypoints), torch.from_numpy(scores), torch.from_numpy(valid),
                           instance_scores=torch.from_numpy(instance_scores))

    def _decode_on_device(self, heat: Tensor, tags: Tensor) -> Predictions:
        """:meth:`decode_predictions` with torch on the maps' device (from :meth:`_maps`): peaks, adjustment and
        filling batched over images, people and keypoints; :func:`~poseforge.runtime.grouping.match_tags` per
        image on the host ([K, M] scores and tags are all it needs)."""
        from ..runtime.grouping import match_tags

        b, k, h, w = heat.shape
        dims = tags.shape[1] // k
        device = heat.device
        m = min(self.max_people, h * w)
        values, index = self._peaks(heat, m)  # [B, K, M], best first
        tag_maps = tags.reshape(b, dims, k, h * w)
        cand_tags = tag_maps.gather(3, index[:, None].expand(b, dims, k, m)).permute(0, 2, 3, 1)  # [B, K, M, L]
        vals_np, tags_np = values.cpu().numpy(), cand_tags.cpu().numpy()
        groups = [match_tags(vals_np[i], tags_np[i], detection_threshold=self.detection_threshold,
                             tag_threshold=self.tag_threshold, joint_order=self.joint_order,
                             use_detection_val=self.use_detection_val)[:self.max_people] for i in range(b)]
        n = max([1] + [len(g) for g in groups])
        member_np = np.full((b, n, k), -1, dtype=np.int64)
        for i, g in enumerate(groups):  # (one copy per image)
            member_np[i, :len(g)] = g
        member = torch.from_numpy(member_np).to(device)
        found = member >= 0
        safe = member.clamp(min=0).transpose(1, 2)  # [B, K, N]
        at = torch.where(found, index.gather(2, safe).transpose(1, 2), 0)  # flat cell of each keypoint, [B, N, K]
        scores = torch.where(found, values.gather(2, safe).transpose(1, 2), 0.0)
        valid = found.any(-1)
        instance_scores = scores.mean(-1)
        x, y = (at % w).float(), torch.div(at, w, rounding_mode="floor").float()
        heat_flat = heat.reshape(b, k, h * w)
        if self.adjust:
            x, y = self._adjust(heat_flat, at, x, y, w, h)
        if self.refine:
            grouped_tags = cand_tags.gather(2, safe[..., None].expand(b, k, n, dims)).transpose(1, 2)  # [B, N, K, L]
            x, y, scores = self._fill(heat_flat, tag_maps, grouped_tags, found, valid, x, y, scores, w)
        stride = torch.tensor([self.input_size[0] / w, self.input_size[1] / h], device=device)
        keypoints = (torch.stack([x, y], -1) + 0.5) * stride - 0.5
        keypoints = torch.where(valid[..., None, None], keypoints, torch.zeros_like(keypoints))
        # best person first (padding last); stable, so equal scores keep the order they were formed in
        rank = torch.where(valid, instance_scores, torch.full_like(instance_scores, -math.inf))
        perm = rank.argsort(dim=1, descending=True, stable=True)
        def take(t: Tensor) -> Tensor:
            return t.gather(1, perm.reshape(perm.shape + (1,) * (t.ndim - 2)).expand_as(t))

        return Predictions(take(keypoints), take(scores), take(valid), instance_scores=take(instance_scores))

    def _peaks(self, heat: Tensor, m: int) -> tuple[Tensor, Tensor]:
        """The references' NMS + ``topk(m)``: the ``m`` best local maxima (value equal to the maximum of its
        ``nms_kernel`` window) of each map ``[B, K, H, W]``, values and flat cells ``[B, K, m]``, best first.

        Only peaks above ``detection_threshold`` are ever grouped, so where few cells pass it (a network's maps)
        only those are tested, each against its window (neighbours off the map clamp to the nearest cell, which
        is inside the window); the rest of the ``m`` are zeros at cell 0. Dense maps take the full max filter."""
        b, k, h, w = heat.shape
        from ..runtime.grouping import detection_cutoff  # (v > t) == (float64(v) > threshold), as match_tags

        flat = heat.reshape(-1)
        above = (flat > float(detection_cutoff(self.detection_threshold))).nonzero().squeeze(1)  # ascending
        r = self.nms_kernel // 2
        value = flat[above]
        span = float(value.max() - value.min()) + 1.0 if value.numel() else 1.0  # (for the sort key below)
        if above.numel() * self.nms_kernel ** 2 > flat.numel() or not math.isfinite(span):
            peaks = heat * (max_filter(heat, self.nms_kernel) == heat)  # most cells pass: the dense filter is cheaper
            return peaks.reshape(b, k, h * w).topk(m, dim=-1)
        hw = h * w
        if r:  # a peak is at least its left / right neighbours, then its upper / lower ones (in its window; off
            # the map they are the cell itself): those cheap tests first, the whole window on the few that pass
            x = above % w
            left, right = flat[above - (x > 0).long()], flat[above + (x < w - 1).long()]
            keep = (value >= left) & (value >= right)
            above, value = above[keep], value[keep]
            y = torch.div(above % hw, w, rounding_mode="floor")
            up, down = flat[above - (y > 0).long() * w], flat[above + (y < h - 1).long() * w]
            keep = (value >= up) & (value >= down)
            above, value = above[keep], value[keep]
        cell = above % hw
        y, x = torch.div(cell, w, rounding_mode="floor"), cell % w
        offsets = torch.arange(-r, r + 1, device=heat.device)
        rows = (y[:, None] + offsets).clamp(0, h - 1) * w  # [C, S]
        cols = (x[:, None] + offsets).clamp(0, w - 1)
        window = (above - cell)[:, None, None] + rows[:, :, None] + cols[:, None, :]  # [C, S, S] flat cells
        keep = flat[window.reshape(len(above), self.nms_kernel ** 2)].amax(1) == value
        above, cell, value = above[keep], cell[keep], value[keep]
        image_map = torch.div(above, hw, rounding_mode="floor")  # (image, keypoint) map of each peak
        # by map, best first within a map, ties by cell: one stable sort of a key whose maps never overlap
        order = (image_map.double() * span - value.double()).argsort(stable=True)
        image_map, cell, value = image_map[order], cell[order], value[order]
        counts = torch.bincount(image_map, minlength=b * k)
        rank = torch.arange(image_map.numel(), device=heat.device) - (counts.cumsum(0) - counts)[image_map]
        sel = rank < m
        values = heat.new_zeros(b * k, m)
        index = torch.zeros(b * k, m, dtype=torch.long, device=heat.device)
        values[image_map[sel], rank[sel]] = value[sel]
        index[image_map[sel], rank[sel]] = cell[sel]
        return values.reshape(b, k, m), index.reshape(b, k, m)

    @staticmethod
    def _adjust(heat_flat: Tensor, at: Tensor, x: Tensor, y: Tensor, w: int, h: int) -> tuple[Tensor, Tensor]:
        """mmpose's ``refine_keypoints``: +-0.25 towards the higher neighbour per axis (no shift on a tie); x
        moves only when 1 < x < W-1 and y > 0, y only when 1 < y < H-1 and x > 0."""
        n = at.shape[1]
        xi, yi = at % w, torch.div(at, w, rounding_mode="floor")
        cells = []
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):  # right, left, below, above
            cells.append((yi + dy).clamp(0, h - 1) * w + (xi + dx).clamp(0, w - 1))
        near = heat_flat.gather(2, torch.cat(cells, 1).transpose(1, 2)).transpose(1, 2)  # [B, 4N, K]
        right, left, below, above = near.split(n, 1)
        x = x + torch.where((xi > 1) & (xi < w - 1) & (yi > 0), 0.25 * torch.sign(right - left), 0.0)
        y = y + torch.where((yi > 1) & (yi < h - 1) & (xi > 0), 0.25 * torch.sign(below - above), 0.0)
        return x, y

    @staticmethod
    def _fill(heat_flat: Tensor, tag_maps: Tensor, grouped_tags: Tensor, found: Tensor, valid: Tensor, x: Tensor,
              y: Tensor, scores: Tensor, w: int) -> tuple[Tensor, Tensor, Tensor]:
        """Each person's missing keypoints at the cell minimizing ``round(|tag - mean tag|) * 100 - heatmap``,
        scored by the heatmap there (HigherHRNet's ``refine``, mmpose's ``_fill_missing_keypoints``), for all
        missing keypoints of the batch at once (:func:`_fill_cells`)."""
        count = found.sum(-1, keepdim=True).clamp(min=1)
        mean = torch.where(found[..., None], grouped_tags, 0.0).sum(2) / count  # [B, N, L]
        bi, ni, ki = (valid[..., None] & ~found).nonzero(as_tuple=True)
        if bi.numel() == 0:
            return x, y, scores
        best = _fill_cells(heat_flat, tag_maps, bi, ki, mean[bi, ni])
        x, y, scores = x.clone(), y.clone(), scores.clone()
        x[bi, ni, ki] = (best % w).float()
        y[bi, ni, ki] = torch.div(best, w, rounding_mode="floor").float()
        scores[bi, ni, ki] = heat_flat[bi, ki, best]
        return x, y, scores

    # ----------------------------------------------------------------------------------------- flip test
    def flip_back(self, outputs: HeatmapsTags, flip_index: Sequence[int] | np.ndarray | Tensor) -> HeatmapsTags:
        """Outputs of a mirrored input re-aligned with the original: maps mirrored along W and left/right
        keypoint channels swapped (heatmaps, 1/2-scale heatmaps and each tag dimension); no column shift
        (HigherHRNet, mmpose's AE test config)."""
        if not isinstance(outputs, HeatmapsTags):
            raise PoseforgeError(f"{self.name} codec: expected HeatmapsTags, got {type(outputs).__name__}")
        k = outputs.heatmaps.shape[1]
        index = check_flip_index(flip_index, k, outputs.heatmaps.device)
        tags = outputs.tags
        if tags.ndim != 4 or k == 0 or tags.shape[1] % k:
            raise PoseforgeError(f"{self.name} codec: tags must be [B, L*K, H, W] with K = {k}, got {list(tags.shape)}")
        b, c, h, w = tags.shape
        changes = {"heatmaps": outputs.heatmaps.flip(-1).index_select(1, index),
                   "tags": tags.flip(-1).reshape(b, c // k, k, h, w).index_select(2, index).reshape(b, c, h, w)}
        hr = getattr(outputs, "heatmaps_hr", None)
        if hr is not None:
            changes["heatmaps_hr"] = hr.flip(-1).index_select(1, index)
        return dataclasses.replace(outputs, **changes)

    def merge_flip(self, plain: HeatmapsTags, flipped_back: HeatmapsTags) -> HeatmapsTags:
        """The flip-test outputs: heatmaps averaged, tags of both passes concatenated (``L`` doubles: a person
        must agree in both, HigherHRNet's and mmpose's rule; an average could blend two people's tags)."""
        changes = {"heatmaps": (plain.heatmaps + flipped_back.heatmaps) * 0.5,
                   "tags": torch.cat([plain.tags, flipped_back.tags], 1)}
        hr, hr_back = getattr(plain, "heatmaps_hr", None), getattr(flipped_back, "heatmaps_hr", None)
        if hr is not None and hr_back is not None:
            changes["heatmaps_hr"] = (hr + hr_back) * 0.5
        return dataclasses.replace(plain, **changes)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size),
                "sigma": self.sigma, "hr_heatmaps": self.hr_heatmaps, "max_people": self.max_people,
                "detection_threshold": self.detection_threshold, "tag_threshold": self.tag_threshold,
                "nms_kernel": self.nms_kernel, "use_detection_val": self.use_detection_val, "adjust": self.adjust,
                "refine": self.refine, "joint_order": None if self.joint_order is None else list(self.joint_order)}
