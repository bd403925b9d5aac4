"""Score a model on ground truth of another keypoint set, on the joints both sets share.

A coco17 model on AIC-14, CrowdPose-14 or MPII-16 ground truth: the ground truth is projected into the
model's set for prediction (:func:`project_ground_truth`: shared joints kept, the others unlabeled),
and the scored results are mapped back and evaluated on the shared joints only, with the file's
sigmas (:func:`evaluate_shared_joints`): joints the model lacks are not predicted, so they are left
out of OKS rather than counted as misses.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..data.coco import CocoKeypoints
from ..errors import PoseforgeError
from ..keypoints import KeypointMapping, KeypointSet, keypoint_subset
from .coco import evaluate_keypoints

__all__ = ["project_ground_truth", "restrict_ground_truth", "map_results", "evaluate_shared_joints", "shared_joints_line"]


def _with_set(gt: CocoKeypoints, ks: KeypointSet, instances: list) -> CocoKeypoints:
    categories = [{**c, "keypoints": list(ks.names)} if isinstance(c, dict) and "keypoints" in c else c
                  for c in gt.categories]
    return CocoKeypoints(gt.source, ks, dict(gt.images), instances, categories, gt.skipped.copy())


def project_ground_truth(gt: CocoKeypoints, mapping: KeypointMapping) -> CocoKeypoints:
    """``gt`` (in ``mapping.target``, the file's set) in ``mapping.source`` (the model's set): shared
    joints copied, the others unlabeled (visibility 0)."""
    if gt.keypoint_set.name != mapping.target.name:
        raise PoseforgeError(f"{gt.source}: ground truth is {gt.keypoint_set.name}, the mapping is to {mapping.target.name}")
    back = KeypointMapping(mapping.target, mapping.source, mapping.target_index, mapping.source_index)
    instances = [inst.copy(keypoints=back.convert(np.asarray(inst.keypoints, dtype=np.float64)),
                           visibility=back.convert(np.asarray(inst.visibility, dtype=np.float64)),
                           keypoint_set=mapping.source.name)
                 for inst in gt.instances]
    return _with_set(gt, mapping.source, instances)


def restrict_ground_truth(gt: CocoKeypoints, indices: Sequence[int], ks: KeypointSet) -> CocoKeypoints:
    """``gt`` with only the joints ``indices`` of its set, as the (unregistered) set ``ks``."""
    index = list(indices)
    instances = [inst.copy(keypoints=np.asarray(inst.keypoints)[index], visibility=np.asarray(inst.visibility)[index],
                           keypoint_set=ks.name)
                 for inst in gt.instances]
    return _with_set(gt, ks, instances)


def map_results(results: Sequence[Mapping[str, Any]], indices: Sequence[int], num_keypoints: int) -> list[dict[str, Any]]:
    """COCO keypoint results (flat ``K*3`` ``keypoints``) keeping only the joints ``indices``, in that order."""
    index = list(indices)
    out = []
    for n, r in enumerate(results):
        flat = np.asarray(r["keypoints"], dtype=np.float64)
        if flat.size != 3 * num_keypoints:
            raise PoseforgeError(f"result {n}: field 'keypoints': expected {3 * num_keypoints} numbers, got {flat.size}")
        out.append({**r, "keypoints": flat.reshape(num_keypoints, 3)[index].reshape(-1).tolist()})
    return out


def evaluate_shared_joints(gt: CocoKeypoints, results: Sequence[Mapping[str, Any]], mapping: KeypointMapping,
                           **options: Any) -> dict[str, float]:
    """OKS AP/AR of ``results`` (in ``mapping.source``, the model's set) against ``gt`` (in
    ``mapping.target``) on the shared joints, with the target set's sigmas; ``options`` are those of
    :func:`~poseforge.evaluation.coco.evaluate_keypoints` (``use_area``, ``backend``, ``crowdpose``)."""
    if not len(mapping):
        raise PoseforgeError(f"{gt.source}: {mapping.source.name} and {mapping.target.name} share no joint to score")
    shared = keypoint_subset(mapping.target, mapping.target_index, name=f"{mapping.target.name}&{mapping.source.name}")
    truth = restrict_ground_truth(gt, mapping.target_index, shared)
    mapped = map_results(results, mapping.source_index, mapping.source.num_keypoints)
    return evaluate_keypoints(truth, mapped, None, parts=False, **options)


def shared_joints_line(mapping: KeypointMapping) -> str:
    """The one line that says what was scored, e.g. ``scored on the 12 joints coco17 and aic14 share: ...``."""
    line = (f"scored on the {len(mapping)} joints {mapping.source.name} and {mapping.target.name} share: "
            f"{', '.join(mapping.names)} ({mapping.target.name} sigmas)")
    missing = mapping.unmapped_target
    if missing:
        line += f"; not predicted, left out of OKS: {', '.join(missing)}"
    return line
