"""SimCC decoding: the plain argmax (mmpose) against the windowed mean (``decode_window``) on the same
predictions.

For each model (a model folder, a run folder or a checkpoint with a SimCC head) this predicts the
held-out synthetic people in their ground-truth boxes (flip test) once per window, in label sigmas
(0 = argmax), and prints COCO AP, the mean per-person OKS and the median pixel error, each against the
argmax of the same run. Pick the window on a set other than the one you report (the default here is
the 500 fresh people of seed 2,000,003, not the presets' held-out seed 1,000,003).

    PYTHONPATH=. python benchmarks/simcc_decode.py runs/sc18 poseforge/assets/pose --images 500
"""
from __future__ import annotations

import argparse
import datetime

import numpy as np

from poseforge.codecs import SimCC, create_codec
from poseforge.data.evalsets import synthetic_eval_set
from poseforge.models import load_model

from keypoint_errors import ap_with_scaled_errors, predict_people  # benchmarks/ is on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders, run folders or checkpoints (SimCC heads)")
    parser.add_argument("--windows", default="0,2,4,6,8,12", help="comma-separated decode windows in label sigmas")
    parser.add_argument("--size", default="192x256", help="image size WxH (default 192x256, the synth-cpu preset)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2_000_003, help="synthetic seed (default: not the held-out one)")
    args = parser.parse_args()
    windows = [0.0] + [w for w in (float(v) for v in args.windows.split(",")) if w != 0]  # argmax first
    size = tuple(int(v) for v in args.size.lower().split("x"))
    data = synthetic_eval_set(args.images, args.seed, size)
    print(f"simcc_decode, {datetime.date.today()}: {data.name}")
    for path in args.models:
        model = load_model(path)
        codec = model.codec
        if not isinstance(codec, SimCC):
            raise SystemExit(f"{path}: not a SimCC model (codec '{codec.name}')")
        print(f"\n{path} (its own window: {codec.decode_window:g})")
        print(f"{'window':>8s} {'AP':>7s} {'vs argmax':>10s} {'mean OKS':>9s} {'median err px':>14s}")
        for window in windows:
            model._codec = create_codec(**{**codec.config(), "decode_window": window})
            people = predict_people(model, data)
            row = (ap_with_scaled_errors(people, data, 1.0), float(people.person_oks().mean()),
                   float(np.nanmedian(people.error())))
            if window == 0:
                reference = row
            print(f"{window:8g} {row[0]:7.4f} {row[0] - reference[0]:+10.4f} {row[1]:9.4f} {row[2]:14.3f}")
        model._codec = codec


if __name__ == "__main__":
    main()
