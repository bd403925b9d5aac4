"""Where a bottom-up (associative-embedding) model loses its AP: localisation, left/right, or grouping.

For each held-out set (synthetic scenes rendered here, or COCO keypoint files given with ``--data``) it prints:

* ``AP (own)``: the model's own decode (its grouping, flip test as configured), scored by COCO OKS AP;
* ``AP (oracle grouping)``: every ground-truth person takes, for each labeled joint, the heatmap peak (3x3
  local maximum above 0.01 of the decode's heatmaps) nearest that joint, scored by the peak's value: what the
  heatmaps allow with perfect grouping and perfect left/right assignment of peaks;
* ``peak err px``: the median distance of those nearest peaks (a localisation floor), by person height;
* ``L/R corr``: the mean correlation of each left/right pair's raw heatmaps (1: the two maps are the same);
* ``L/R side``: on one-person images, how often the argmax of a side's map is nearer that side's joint than the
  other side's (0.5: chance, the maps do not tell a person's left from right).

    PYTHONPATH=. python benchmarks/bottomup_diagnosis.py --model runs/litepose-xs-synth
    PYTHONPATH=. python benchmarks/bottomup_diagnosis.py --model RUN --data my_scenes/annotations.json
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, load_average  # noqa: E402

from poseforge.codecs.associative_embedding import max_filter  # noqa: E402
from poseforge.models.loading import load_model  # noqa: E402

# (name, people per image, framing): the preset's held-out kind, then fewer and larger people
SYNTHETIC_SETS = (("scenes 1-6", (1, 6), "auto"), ("scenes 1-3", (1, 3), "auto"), ("one person", (1, 1), "scene"))


def render_set(out: Path, people: tuple[int, int], framing: str, images: int, seed: int, size: int) -> Path:
    """A held-out COCO file of synthetic scenes (what ``poseforge synth`` writes)."""
    from poseforge.cli import main as cli

    args = ["synth", "--out", str(out), "--num-images", str(images), "--seed", str(seed), "--size", f"{size}x{size}",
            "--people", f"{people[0]}-{people[1]}", "--framing", framing]
    with contextlib.redirect_stdout(io.StringIO()):
        if cli(args) != 0:
            raise SystemExit(f"poseforge synth {' '.join(args)} failed")
    return out / "annotations.json"


def coco_ap(annotations: Path, results: list[dict]) -> tuple[float, float]:
    """COCO keypoint AP and AP50 of ``results`` (pycocotools; 0 without results)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def diagnose(model, annotations: Path, flip_test: bool) -> dict[str, float]:
    coco = json.loads(annotations.read_text())
    root = annotations.parent
    people: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0:
            people.setdefault(a["image_id"], []).append(a)
    ks = model.keypoint_set_of(0)
    pairs = [(k, int(j)) for k, j in enumerate(ks.flip_index) if k < j]
    own, oracle, errors, heights, corr, side = [], [], [], [], [], []
    for image in coco["images"]:
        path = root / image["file_name"] if (root / image["file_name"]).exists() else root / "images" / image["file_name"]
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise SystemExit(f"{path}: cannot read the image")
        frame = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)
        pred = model.predict(frame[None], flip_test=flip_test)
        for n in range(pred.keypoints.shape[1]):
            if pred.valid[0, n]:
                kp = torch.cat([pred.keypoints[0, n], pred.scores[0, n, :, None]], 1)
                own.append({"image_id": image["id"], "category_id": 1, "keypoints": kp.reshape(-1).tolist(),
                            "score": float(pred.instance_scores[0, n])})
        # the decode's maps of the same input (whole image at the model's input size)
        transform = model.transform(False)
        matrix = transform.matrix(frame.shape[-1], frame.shape[-2])[0]
        from poseforge.data.transforms import affine_points, crop_batch, invert_affine

        inputs = crop_batch(frame, matrix[None], model.input_size)
        with torch.no_grad():
            outputs = model.infer(model.normalize(inputs), flip_test, 0)
            raw = model(model.normalize(inputs))
        heat, _ = model.codec._maps(outputs)
        heat = heat[0]
        back = invert_affine(matrix[None].double())[0]
        k_count, h, w = heat.shape
        stride = model.input_size[0] / w
        peaks = (max_filter(heat[None], 3)[0] == heat) & (heat > 0.01)
        raw_maps = raw.heatmaps[0]
        corr += [float(torch.corrcoef(torch.stack([raw_maps[a].flatten(), raw_maps[b].flatten()]))[0, 1])
                 for a, b in pairs]
        for person in people.get(image["id"], []):
            g = np.asarray(person["keypoints"], float).reshape(-1, 3)
            kps, scores = np.zeros((k_count, 2)), np.zeros(k_count)
            for k in range(k_count):
                ys, xs = torch.nonzero(peaks[k], as_tuple=True)
                if g[k, 2] == 0 or len(xs) == 0:
                    continue
                cells = torch.stack([(xs.double() + 0.5) * stride - 0.5, (ys.double() + 0.5) * stride - 0.5], 1)
                points = affine_points(cells, back).numpy()
                d = np.hypot(*(points - g[k, :2]).T)
                j = int(d.argmin())
                kps[k], scores[k] = points[j], float(heat[k, ys[j], xs[j]])
                errors.append(float(d[j]))
                heights.append(person["bbox"][3])
            labeled = g[:, 2] > 0
            oracle.append({"image_id": image["id"], "category_id": 1,
                           "keypoints": np.c_[kps, scores].reshape(-1).tolist(), "score": float(scores[labeled].mean())})
        if len(people.get(image["id"], [])) == 1:  # left/right: is each side's argmax nearer its own joint?
            g = np.asarray(people[image["id"]][0]["keypoints"], float).reshape(-1, 3)
            scale = max(1.0, people[image["id"]][0]["bbox"][3])
            for a, b in pairs:
                if g[a, 2] == 0 or g[b, 2] == 0 or np.hypot(*(g[a, :2] - g[b, :2])) < 0.05 * scale:
                    continue
                for mine, other in ((a, b), (b, a)):
                    cell = int(heat[mine].argmax())
                    xy = torch.tensor([[(cell % w + 0.5) * stride - 0.5, (cell // w + 0.5) * stride - 0.5]], dtype=torch.double)
                    p = affine_points(xy, back).numpy()[0]
                    dm, do = np.hypot(*(p - g[mine, :2])), np.hypot(*(p - g[other, :2]))
                    side.append(1.0 if dm < do else 0.5 if dm == do else 0.0)
    ap, ap50 = coco_ap(annotations, own)
    oap, oap50 = coco_ap(annotations, oracle)
    errors, heights = np.asarray(errors), np.asarray(heights)
    out = {"people": sum(len(v) for v in people.values()), "ap": ap, "ap50": ap50, "oracle_ap": oap,
           "oracle_ap50": oap50, "peak_err": float(np.median(errors)) if len(errors) else float("nan"),
           "lr_corr": float(np.mean(corr)) if corr else float("nan"),
           "lr_side": float(np.mean(side)) if side else float("nan"), "lr_side_joints": len(side)}
    for lo, hi in ((0, 50), (50, 100), (100, 10_000)):
        sel = (heights >= lo) & (heights < hi)
        out[f"peak_err_h{lo}"] = float(np.median(errors[sel])) if sel.any() else float("nan")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a bottom-up run folder or model")
    parser.add_argument("--data", action="append", default=[], help="COCO keypoint files (default: synthetic sets)")
    parser.add_argument("--images", type=int, default=100, help="images per synthetic set")
    parser.add_argument("--seed", type=int, default=1_000_003, help="synthetic sets' seed (the presets' held-out seed)")
    parser.add_argument("--no-flip", action="store_true", help="no flip test")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    if getattr(model, "kind", None) != "bottomup":
        raise SystemExit(f"{args.model} is not a bottom-up model")
    print(f"# {args.model}: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
          f"torch {torch.__version__}, {load_average()}, flip test {'off' if args.no_flip else 'on'}")
    print("| set | people | AP (own) | AP50 (own) | AP (oracle grouping) | AP50 (oracle) | peak err px (h<50 / 50-100 / >=100) "
          "| L/R corr | L/R side |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        sets = [(Path(p).name, Path(p)) for p in args.data]
        if not sets:
            size = model.input_size[0]
            sets = [(name, render_set(Path(tmp) / str(i), people, framing, args.images, args.seed, size))
                    for i, (name, people, framing) in enumerate(SYNTHETIC_SETS)]
        for name, annotations in sets:
            r = diagnose(model, annotations, not args.no_flip)
            print(f"| {name} | {r['people']} | {r['ap']:.3f} | {r['ap50']:.3f} | {r['oracle_ap']:.3f} | {r['oracle_ap50']:.3f} "
                  f"| {r['peak_err']:.1f} ({r['peak_err_h0']:.1f} / {r['peak_err_h50']:.1f} / {r['peak_err_h100']:.1f}) "
                  f"| {r['lr_corr']:.3f} | {r['lr_side']:.3f} ({r['lr_side_joints']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
