"""The synthetic renderer's outputs are frozen: fixed (seed, index) pairs render to the same bits as the
renderer did before its speed-up (issue 32), for every output and label.

``tests/data/synth_golden/{vendor}.json`` holds, per CPU vendor, case and output, the SHA-256 of the array's bytes
plus its dtype, shape and float64 sum (the sum only makes a failure readable: which output moved, by how
much). The Intel digests were written by the renderer as of commit 042e68e, the AMD ones by the same
renderer (unchanged since) on an AMD EPYC; regenerate them only for an intended change of the rendered data
(``PYTHONPATH=. python tests/test_synth_golden.py --write`` writes this CPU's vendor's entry), and say so in
the commit.

The digests are those of x86-64 CPUs with torch's MKL build, per vendor: ``torch.sqrt`` on such a CPU is
MKL's, which is not correctly rounded and takes another code path on AMD than on Intel, so the last bits
differ between vendors (and on other platforms); where there is no entry for this CPU the test is skipped.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from poseforge.data.synth import SyntheticPoseDataset

GOLDEN = Path(__file__).parent / "data" / "synth_golden"


def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ... (``unknown`` where ``/proc/cpuinfo`` does not say)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def golden_file() -> Path:
    return GOLDEN / f"{cpu_vendor()}.json"


def golden_digests() -> dict:
    """This CPU vendor's digests ({} where there are none)."""
    return json.loads(golden_file().read_text()) if golden_file().exists() else {}


pytestmark = [
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkl.is_available(),
                       reason="golden digests are of x86-64 with torch's MKL (its sqrt rounds differently)"),
    pytest.mark.skipif(not golden_digests(), reason=f"no golden digests for this CPU vendor ({cpu_vendor()}): write "
                                                    "them with `python tests/test_synth_golden.py --write` at a known-good commit"),
]

# name -> dataset options and the image indices rendered together in one call. The crops are the
# benchmark's workload (with every label); the others reach scenes, whole-body keypoints, quadrupeds,
# no clutter and sub-batching (more images than the CPU renders at a time).
CASES: dict[str, tuple[dict, list[int]]] = {
    "crops_coco17": (dict(seed=0, image_size=(192, 256), people=(1, 1), keypoint_set="coco17"), list(range(1000, 1012))),
    "crops_seed7": (dict(seed=7, image_size=(192, 256), people=(1, 1), keypoint_set="coco17"), [3, 41, 59, 260]),
    "scenes_coco17": (dict(seed=3, image_size=(160, 120), people=(1, 4), keypoint_set="coco17"), [0, 5, 11, 12, 19]),
    "crops_wholebody": (dict(seed=1, image_size=(96, 128), people=(1, 1), keypoint_set="wholebody133"), [2, 8]),
    "scene_quadruped": (dict(seed=2, image_size=(128, 96), people=(1, 2), keypoint_set="ap10k17"), [4, 9]),
    "crops_no_clutter": (dict(seed=5, image_size=(64, 80), people=(1, 1), clutter=False), [0, 1, 2]),
}
FIELDS = ("image", "parts", "depth", "normals", "instance", "camera", "present", "category", "keypoints", "visibility",
          "keypoints_cam", "slack", "bbox", "area")


def render_digests(options: dict, indices: list[int]) -> dict[str, dict]:
    """Per output of ``render_tensors(indices)``: sha256, dtype, shape and float64 sum."""
    ds = SyntheticPoseDataset(10 ** 6, dense=True, **options)
    batch = ds.render_tensors(indices)
    out = {}
    for name in FIELDS:
        a = np.ascontiguousarray(getattr(batch, name).cpu().numpy())
        out[name] = {"sha256": hashlib.sha256(a.tobytes()).hexdigest(), "dtype": str(a.dtype), "shape": list(a.shape),
                     "sum": float(a.astype(np.float64).sum())}
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_renderer_output_is_bit_identical_to_the_golden_digests(case):
    golden = golden_digests()[case]
    options, indices = CASES[case]
    got = render_digests(options, indices)
    changed = [f"{name}: sum {golden[name]['sum']!r} -> {got[name]['sum']!r}, shape {golden[name]['shape']} -> "
               f"{got[name]['shape']}" for name in FIELDS if got[name] != golden[name]]
    assert not changed, f"{case}: rendered outputs changed:\n" + "\n".join(changed)


def test_golden_digests_tell_the_images_apart():
    """The digests are sensitive: different images (or one changed pixel) give different hashes."""
    golden = golden_digests()
    assert len({golden[c]["image"]["sha256"] for c in CASES}) == len(CASES)
    options, indices = CASES["crops_no_clutter"]
    ds = SyntheticPoseDataset(10 ** 6, dense=True, **options)
    image = ds.render_tensors(indices).image.numpy().copy()
    image[0, 0, 0, 0] ^= 1
    assert hashlib.sha256(image.tobytes()).hexdigest() != golden["crops_no_clutter"]["image"]["sha256"]


if __name__ == "__main__" and "--write" in sys.argv:
    torch.set_num_threads(1)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    golden_file().write_text(json.dumps({case: render_digests(*CASES[case]) for case in CASES}, indent=1) + "\n")
    print(f"wrote {golden_file()}")
