"""Bottom-up grouping (associative-embedding decode) speed: poseforge's codec against a straightforward per-person
Python grouping and against mmpose 1.3.2's own ``AssociativeEmbedding.batch_decode``, in the same run.

LitePose-like maps: a 512x512 input, 1/4-scale maps (128x128), COCO (17 keypoints, mmpose's joint order) or
CrowdPose (14), 1-10 people (and one case with 1/2-scale heatmaps: poseforge averages them with the upsampled
1/4-scale maps and groups at 256x256; the other two get those aggregated maps, their aggregation untimed) with random visibility, Gaussian peaks of random height, sub-threshold noise and
tags near each person's value (3x3 patches, noise 0.15). Every person shows the first joint of the order, so
no later candidate is a new person and mmpose's rounded assignment cost has no exact tie (its Munkres solver
and scipy's may break a tie differently, see ``poseforge.runtime.decode.match_tags``): all three decode the
same people, which the script asserts before timing.

* ``poseforge``: ``create_codec("associative-embedding").decode_predictions`` on CPU tensors - the 1/2-scale
  aggregation in torch, then :mod:`poseforge.runtime.grouping` (numpy): peaks tested only where the maps pass
  the threshold, the assignment per joint with ``scipy.optimize.linear_sum_assignment``, the missing-keypoint
  search skipping blocks of cells its bounds rule out (block bounds from torch's reductions);
* ``per-person python``: the same rule written the plain way (below): dicts of people, a Python loop over
  candidates, people and keypoints, the same scipy solver;
* ``mmpose``: mmpose's codec (Munkres in pure Python, per-person numpy refinement) in the oracle venv of
  ``../shared/oracle``, a persistent subprocess timing its decode on request (left out, with a note, where
  that venv is absent).

Interleaved repeat by repeat, one image per call, one thread each; medians of the wall-clock time and of the
process's CPU time (``time.process_time``: on a loaded machine waiting for a core inflates the wall clock of a
few-millisecond call more than that of a long one; the CPU time counts the work alone).

    PYTHONPATH=. python benchmarks/ae_grouping.py [--repeats 15]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from poseforge.codecs import create_codec
from poseforge.outputs import HeatmapsTags

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

SHARED = Path(__file__).resolve().parents[2] / "shared"
INPUT = (512, 512)
COCO_ORDER = [0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16]
CASES = [(17, 1, False), (17, 3, False), (17, 6, False), (17, 10, False), (14, 6, False), (17, 6, True)]  # (K, people, hr)


# ----------------------------------------------------------------------------- maps
def make_maps(rng: np.random.Generator, codec, k: int, people: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's heatmaps [1, K, 128, 128] and tags [1, K, 128, 128] (see the module doc)."""
    w, h = codec.heatmap_size
    kp = np.zeros((people, k, 2))
    for n in range(people):  # same-type keypoints >= 3 cells apart: each its own peak
        for j in range(k):
            while True:
                p = rng.uniform(8, INPUT[0] - 9, 2)
                cells = np.floor((kp[:n, j] + 0.5) / 4)
                if n == 0 or np.abs(cells - np.floor((p + 0.5) / 4)).max(-1).min() >= 3:
                    break
            kp[n, j] = p
    vis = rng.random((people, k)) < 0.75
    vis[:, (codec.joint_order or [0])[0]] = True
    batch = {"keypoints": torch.tensor(kp[None], dtype=torch.float32),
             "visibility": torch.tensor(vis[None], dtype=torch.float32), "valid": torch.ones(1, people, dtype=torch.bool)}
    heat = torch.zeros(1, k, h, w)
    height = rng.uniform(0.3, 1.0, (people, k))
    for n in range(people):
        one = codec.encode({key: v[:, n:n + 1] for key, v in batch.items()})["heatmaps"]
        heat = torch.maximum(heat, one * torch.tensor(height[n], dtype=torch.float32)[None, :, None, None])
    heat = heat + torch.tensor(rng.uniform(0, 0.09, heat.shape), dtype=torch.float32)
    t = codec.encode(batch)
    values = rng.permutation(3 * people)[:people] * 1.7
    tags = np.zeros((k, h, w), dtype=np.float32)
    for n, j in zip(*np.nonzero(t["keypoint_weights"][0].numpy())):
        y, x = divmod(int(t["keypoint_indices"][0, n, j]), w)
        tags[j, max(0, y - 1):y + 2, max(0, x - 1):x + 2] = values[n]
    tags += rng.normal(0, 0.15, tags.shape).astype(np.float32)
    return heat, torch.from_numpy(tags)[None]


# ----------------------------------------------------------------------------- reference (plain Python)
def reference_decode(heat: torch.Tensor, tags: torch.Tensor, codec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The codec's rule, one image, the straightforward way: a dict per person, loops over candidates, people
    and keypoints. Returns keypoints [P, K, 2] (input pixels), scores [P, K], person scores [P], best first."""
    _, k, h, w = heat.shape
    m = min(codec.max_people, h * w)
    pooled = F.max_pool2d(heat, codec.nms_kernel, 1, codec.nms_kernel // 2)
    vals, index = (heat * (pooled == heat)).reshape(1, k, h * w).topk(m, dim=-1)
    vals, index = vals[0].numpy().astype(np.float64), index[0].numpy()
    maps, tag_maps = heat[0].numpy(), tags[0].numpy().reshape(-1, k, h * w)  # [L, K, HW]
    people: list[dict] = []
    for j in codec.joint_order or range(k):
        cands = [c for c in range(m) if vals[j, c] > codec.detection_threshold]
        if not cands:
            continue
        cand_tags = [tag_maps[:, j, index[j, c]].astype(np.float64) for c in cands]
        if not people:
            for c, t in zip(cands, cand_tags):
                people.append({"joints": {j: c}, "tags": [t]})
            continue
        means = [np.mean(p["tags"], axis=0) for p in people]
        dist = np.array([[np.linalg.norm(t - mean) for mean in means] for t in cand_tags])
        cost = np.round(dist) * 100 - vals[j, cands][:, None]
        tie = 0.25 * float(np.spacing(np.float32(vals[j, cands].min()))) / (len(cands) * codec.tag_threshold)
        cost = cost + tie * np.minimum(dist, codec.tag_threshold)
        if len(cands) > len(people):
            cost = np.concatenate([cost, np.zeros((len(cands), len(cands) - len(people)))], 1)
        grouped = len(people)
        for r, c in zip(*linear_sum_assignment(cost)):
            if c < grouped and dist[r, c] < codec.tag_threshold:
                people[c]["joints"][j] = cands[r]
                people[c]["tags"].append(cand_tags[r])
            else:
                people.append({"joints": {j: cands[r]}, "tags": [cand_tags[r]]})
    people = people[:codec.max_people]
    keypoints, scores, person_scores = np.zeros((len(people), k, 2)), np.zeros((len(people), k)), np.zeros(len(people))
    for n, person in enumerate(people):
        for j, c in person["joints"].items():
            y, x = divmod(int(index[j, c]), w)
            keypoints[n, j] = (x, y)
            scores[n, j] = vals[j, c]
            if codec.adjust:  # mmpose's refine_keypoints
                if 1 < x < w - 1 and 0 < y:
                    keypoints[n, j, 0] += 0.25 * np.sign(maps[j, y, x + 1] - maps[j, y, x - 1])
                if 1 < y < h - 1 and 0 < x:
                    keypoints[n, j, 1] += 0.25 * np.sign(maps[j, y + 1, x] - maps[j, y - 1, x])
        person_scores[n] = scores[n].mean()
        if codec.refine:
            mean = np.mean([tag_maps[:, j, index[j, c]] for j, c in person["joints"].items()], axis=0)
            for j in range(k):
                if j in person["joints"]:
                    continue
                dist = np.linalg.norm(tag_maps[:, j] - mean[:, None], axis=0)
                i = int(np.argmin(np.round(dist) * 100 - maps[j].reshape(-1)))
                keypoints[n, j] = (i % w, i // w)
                scores[n, j] = maps[j].reshape(-1)[i]
    order = np.argsort(-person_scores, kind="stable")
    stride = np.array([INPUT[0] / w, INPUT[1] / h])
    return (keypoints[order] + 0.5) * stride - 0.5, scores[order], person_scores[order]


# ----------------------------------------------------------------------------- mmpose oracle
ORACLE_SERVER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401
import numpy as np, torch
from mmpose.codecs import AssociativeEmbedding
torch.set_num_threads(1)
data = np.load(sys.argv[2])
codecs = {}
print("ready", flush=True)
for line in sys.stdin:
    case, out = line.split()
    heat, tags = torch.from_numpy(data[case + "_heat"]), torch.from_numpy(data[case + "_tags"])
    k, h, w = heat.shape[1:]
    order = [int(i) for i in data[case + "_order"]]
    codec = AssociativeEmbedding(input_size=(512, 512), heatmap_size=(w, h), sigma=2, decode_topk=30,
                                 decode_max_instances=30, decode_keypoint_order=order, decode_center_shift=0.5)
    start, cpu = time.perf_counter(), time.process_time()
    kps, scores, inst = codec.batch_decode(heat, tags)
    took, took_cpu = time.perf_counter() - start, time.process_time() - cpu
    if out != "-":
        np.savez(out, keypoints=kps[0], scores=scores[0], instance_scores=inst[0])
    print(json.dumps({"seconds": took, "cpu_seconds": took_cpu}), flush=True)
'''


class Oracle:
    """mmpose's AE decode in its own process: ``decode(case, out)`` -> seconds (results to ``out`` unless "-")."""

    def __init__(self, python: Path, maps: Path) -> None:
        self.proc = subprocess.Popen([str(python), "-c", ORACLE_SERVER, str(SHARED / "oracle"), str(maps)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"})
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the mmpose oracle did not start ({line!r})")

    def decode(self, case: str, out: str = "-") -> tuple[float, float]:
        self.proc.stdin.write(f"{case} {out}\n")
        self.proc.stdin.flush()
        took = json.loads(self.proc.stdout.readline())
        return took["seconds"], took["cpu_seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    python = Path(os.environ.get("POSEFORGE_ORACLE_PYTHON", SHARED.parent / "oracle-venv" / "bin" / "python"))
    print(f"{datetime.date.today()}, {cpu_name()}, torch {torch.__version__}, 1 thread, {load_average()}")
    rng = np.random.default_rng(0)
    cases: dict[str, tuple] = {}  # name -> (codec, its outputs, the maps it groups: heatmaps, tags)
    for k, people, hr in CASES:
        codec = create_codec("associative-embedding", input_size=INPUT, joint_order=COCO_ORDER if k == 17 else None,
                             hr_heatmaps=hr)
        heat, tags = make_maps(rng, codec, k, people)
        outputs = HeatmapsTags(heat, tags)
        if hr:  # a 1/2-scale map: the 1/4-scale one upsampled, with its own noise
            fine = F.interpolate(heat, scale_factor=2.0, mode="bilinear")
            fine = fine + torch.tensor(rng.uniform(-0.02, 0.02, fine.shape), dtype=torch.float32)
            outputs = HeatmapsTags(heat, tags, heatmaps_hr=fine)
        cases[f"k{k}_p{people}" + ("_hr" if hr else "")] = (codec, outputs, *codec._maps(outputs))
    with tempfile.TemporaryDirectory() as tmp:
        maps = Path(tmp) / "maps.npz"
        np.savez(maps, **{f"{c}_{part}": v for c, (codec, _, heat, tags) in cases.items()
                          for part, v in (("heat", heat.numpy()), ("tags", tags.numpy()),
                                          ("order", np.array(codec.joint_order or range(heat.shape[1]))))})
        oracle = Oracle(python, maps) if python.exists() else None
        if oracle is None:
            print(f"(mmpose oracle not found at {python}: poseforge and the per-person reference only)")
        # equal results first: the three decode the same people
        for case, (codec, outputs, heat, tags) in cases.items():
            pred = codec.decode_predictions(outputs)
            valid = pred.valid[0]
            kp, scores, _ = reference_decode(heat, tags, codec)
            stride = INPUT[0] / heat.shape[-1]
            assert valid.sum() == len(kp) == int(case.split("_p")[1].split("_")[0]), case
            assert np.abs(pred.keypoints[0][valid].numpy() - kp).max() < 1e-3, case
            assert np.abs(pred.scores[0][valid].numpy() - scores).max() < 1e-6, case
            if oracle is not None:
                oracle.decode(case, str(Path(tmp) / f"{case}.npz"))
                ref = np.load(Path(tmp) / f"{case}.npz")
                order = np.argsort(-ref["instance_scores"], kind="stable")
                grouped = (create_codec(**{**codec.config(), "refine": False}).decode_predictions(
                    outputs).scores[0][valid] > 0).numpy()
                # mmpose: (cell + adjustment + 0.5 for grouped keypoints) * stride; poseforge: pixel centres
                mine = (pred.keypoints[0][valid].numpy() + 0.5) / stride - 0.5 + np.where(grouped[..., None], 0.5, 0.0)
                assert np.abs(mine - ref["keypoints"][order] / stride).max() < 1e-4, case
                assert np.abs(pred.scores[0][valid].numpy() - ref["scores"][order]).max() < 1e-6, case
        print("equal: poseforge = per-person python" + (" = mmpose" if oracle else "") + f" on {len(cases)} cases")
        # per (case, way): wall-clock and CPU seconds (the process's; every way runs one thread)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for repeat in range(args.repeats + 2):  # two warm-up rounds
            for case, (codec, outputs, heat, tags) in cases.items():
                ways = {"poseforge": lambda c=codec, o=outputs: c.decode_predictions(o),
                        "per-person python": lambda c=codec, h=heat, t=tags: reference_decode(h, t, c)}
                for way, fn in ways.items():
                    start, cpu = time.perf_counter(), time.process_time()
                    fn()
                    took = (time.perf_counter() - start, time.process_time() - cpu)
                    if repeat >= 2:
                        times.setdefault((case, way), []).append(took)
                if oracle is not None:
                    took = oracle.decode(case)
                    if repeat >= 2:
                        times.setdefault((case, "mmpose"), []).append(took)
        if oracle is not None:
            oracle.close()
    print(f"after: {load_average()}; median of {args.repeats}, milliseconds per image, wall clock / CPU time "
          "(poseforge's speed-up on each)\n")
    print("| keypoints | people | maps grouped | poseforge | per-person python | mmpose 1.3.2 |")
    print("|---:|---:|---|---:|---:|---:|")
    for case, (_, _, heat, _) in cases.items():
        k, people = case[1:].split("_")[0], case.split("_p")[1].split("_")[0]
        size = f"{heat.shape[-1]}x{heat.shape[-2]}" + (" (1/4 + 1/2)" if case.endswith("_hr") else "")
        ms = {way: [1e3 * statistics.median(t[i] for t in runs) for i in (0, 1)]
              for (c, way), runs in times.items() if c == case}
        mine = ms["poseforge"]
        cells = [f"{mine[0]:.2f} / {mine[1]:.2f}"]
        for way in ("per-person python", "mmpose"):
            if way in ms:
                wall, cpu = ms[way]
                cells.append(f"{wall:.2f} / {cpu:.2f} ({wall / mine[0]:.1f}x / {cpu / mine[1]:.1f}x)")
            else:
                cells.append("-")
        print(f"| {k} | {people} | {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
