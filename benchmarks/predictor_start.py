"""CPU start-up of a Predictor: ``import torch``, then ``Predictor(...)`` to the first prediction returned.

Every measurement is a fresh Python process (start-up costs are one-time costs: a warm process would hide
them) that times, in order:

* ``import torch``;
* ``import poseforge.inference.predictor`` (what ``from poseforge import Predictor`` loads);
* ``Predictor(model, detector="bundled", device="cpu")`` up to the first prediction returned, on a
  640x480 frame of two synthetic people (the detector finds them, the pose model runs on both crops):
  the issue's goal is at most 0.5 s;
* then the median of 10 more predictions (the steady state).

Arms, per model (the bundled ViTPose ``vitpose-tiny.synth``, and an RTMPose-t folder written by
``save_pretrained``):

* ``new``: this tree (the model is built on the meta device with no weight initializer run,
  ``poseforge.models.loading.skip_meta_init``);
* ``init forced``: the same tree with ``skip_meta_init`` replaced by a no-op context in the child, so the
  initializers run on the meta device as before (the reference for the start-up ratio);
* ``spin`` (first model only): ``new`` with ``OMP_WAIT_POLICY`` unset, OpenMP's spinning idle workers,
  against the ``PASSIVE`` policy every other arm runs with (poseforge's documented default; see
  docs/performance.md, "Threads on CPU");
* ``--baseline-rev REV`` adds ``REV``: that git revision's tree (``git archive``, into a temporary folder),
  the whole old path, imports included.

Arms interleave within each repeat (a noisy neighbour slows all alike); medians of ``--repeats``. Children
write their bytecode under a temporary ``PYTHONPYCACHEPREFIX`` and one untimed warm-up child per arm compiles
it, as an installed package has its ``.pyc`` files (this repository's environment may set
``PYTHONDONTWRITEBYTECODE``, which would add compiling every module to every start).

    PYTHONPATH=. python benchmarks/predictor_start.py [--repeats 5] [--baseline-rev 042e68e]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.5

# The child: one start-up, timed; prints one JSON line.
CHILD = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import poseforge.inference.predictor as predictor_module
t2 = time.perf_counter()
import numpy as np
if args["force_init"]:
    import contextlib
    import poseforge.models.loading as loading
    loading.skip_meta_init = contextlib.nullcontext  # initializers run on the meta device, as before
frame = np.load(args["frame"])
t3 = time.perf_counter()
predictor = predictor_module.Predictor(args["model"], detector="bundled", device="cpu")
result = predictor(frame)
t4 = time.perf_counter()
steady = []
for _ in range(args["steady"]):
    s = time.perf_counter()
    predictor(frame)
    steady.append(time.perf_counter() - s)
steady.sort()
import poseforge
print(json.dumps({"torch": t1 - t0, "module": t2 - t1, "start": t4 - t3, "people": len(result),
                  "steady": steady[len(steady) // 2] if steady else float("nan"), "file": poseforge.__file__,
                  "heavy": any(m in sys.modules for m in ("torch._dynamo", "sympy")), "threads": torch.get_num_threads()}))
"""


def run_child(arm: dict, frame: Path, pycache: Path, steady: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "OMP_WAIT_POLICY")}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = str(arm["tree"])
    if arm["policy"]:
        env["OMP_WAIT_POLICY"] = arm["policy"]
    payload = json.dumps({"model": arm["model"], "force_init": arm["force_init"], "frame": str(frame), "steady": steady})
    proc = subprocess.run([sys.executable, "-c", CHILD, payload], env=env, cwd=pycache, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{arm['name']}: child failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["file"].startswith(str(arm["tree"])):
        raise SystemExit(f"{arm['name']}: imported poseforge from {out['file']}, not {arm['tree']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed children per arm (default: 5)")
    parser.add_argument("--steady", type=int, default=10, help="predictions after the first, for the steady state")
    parser.add_argument("--baseline-rev", default=None, metavar="REV",
                        help="also time this git revision's tree (the whole old path), e.g. the commit before the change")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from poseforge.inference.synthetic_video import crossing_clip
    from poseforge.models import create_model

    with tempfile.TemporaryDirectory(prefix="predictor_start_") as tmp:
        tmp_path = Path(tmp)
        frame = tmp_path / "frame.npy"
        np.save(frame, crossing_clip(num_frames=1, size=(640, 480)).frames[0])
        rtmpose = create_model("rtmpose-t").save_pretrained(tmp_path / "rtmpose-t")
        models = {"bundled": "bundled", "rtmpose-t folder": str(rtmpose)}
        baseline = None
        if args.baseline_rev:
            baseline = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline_rev], check=True,
                                      capture_output=True, text=True).stdout.strip()
        arms = []
        for i, (label, model) in enumerate(models.items()):
            arms.append({"name": f"{label} | new", "model": model, "tree": ROOT, "force_init": False, "policy": "PASSIVE"})
            arms.append({"name": f"{label} | init forced", "model": model, "tree": ROOT, "force_init": True,
                         "policy": "PASSIVE"})
            if args.baseline_rev:
                old = tmp_path / "baseline"
                if not old.exists():
                    old.mkdir()
                    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev], check=True,
                                             capture_output=True).stdout
                    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
                arms.append({"name": f"{label} | {baseline}", "model": model, "tree": old, "force_init": False,
                             "policy": "PASSIVE"})
            if i == 0:
                arms.append({"name": f"{label} | new, spin", "model": model, "tree": ROOT, "force_init": False,
                             "policy": None})
        pycache = tmp_path / "pycache"
        pycache.mkdir()
        print(f"predictor start-up: {cpu_name()}, {os.cpu_count()} CPUs, {load_average()}, python {sys.version.split()[0]}")
        for arm in arms:  # untimed: compiles the bytecode once per tree
            run_child(arm, frame, pycache, 0)
        results: dict[str, list[dict]] = {arm["name"]: [] for arm in arms}
        for r in range(args.repeats):
            for arm in arms:
                results[arm["name"]].append(run_child(arm, frame, pycache, args.steady))
            print(f"  repeat {r + 1}/{args.repeats} done ({load_average()})", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    print(f"\nmedians of {args.repeats} fresh processes; OMP_WAIT_POLICY=PASSIVE unless 'spin'; {load_average()}")
    print("1st/torch: Predictor->first prediction over the same process's import torch (both scale with the load); "
          "dynamo: processes that imported torch._dynamo or sympy")
    header = (f"{'model | arm':32s} {'import torch':>12s} {'import pred.':>12s} {'Predictor->1st':>14s} "
              f"{'after torch':>11s} {'1st/torch':>9s} {'steady/pred':>11s} {'people':>6s} {'dynamo':>6s}")
    print(header)
    print("-" * len(header))
    for arm in arms:
        name = arm["name"]
        after = statistics.median(x["module"] + x["start"] for x in results[name])
        relative = statistics.median(x["start"] / x["torch"] for x in results[name])
        heavy = sum(x["heavy"] for x in results[name])
        print(f"{name:32s} {med(name, 'torch'):11.3f}s {med(name, 'module'):11.3f}s {med(name, 'start'):13.3f}s "
              f"{after:10.3f}s {relative:9.2f} {med(name, 'steady') * 1e3:9.1f}ms {results[name][0]['people']:6d} "
              f"{heavy:>4d}/{len(results[name])}")
    print()
    for label in models:
        new, forced = f"{label} | new", f"{label} | init forced"
        start = med(new, "start")
        relative = statistics.median(x["start"] / x["torch"] for x in results[new])
        print(f"{label}: Predictor->first prediction {start:.3f}s ({'meets' if start <= GOAL_S else 'misses'} the "
              f"{GOAL_S}s goal at this load; {relative:.2f}x import torch), {med(forced, 'start') / start:.1f}x faster "
              f"than with init forced ({med(forced, 'start'):.3f}s); first prediction = "
              f"{start / med(new, 'steady'):.1f}x a steady one")
        if args.baseline_rev:
            old = f"{label} | {baseline}"
            after_new = statistics.median(x["module"] + x["start"] for x in results[new])
            after_old = statistics.median(x["module"] + x["start"] for x in results[old])
            print(f"  vs {baseline}: import + start {after_new:.3f}s vs {after_old:.3f}s "
                  f"({after_old / after_new:.1f}x)")
    first = next(iter(models))
    spin, passive = f"{first} | new, spin", f"{first} | new"
    print(f"{first}: steady prediction with OMP_WAIT_POLICY unset (spinning workers) "
          f"{med(spin, 'steady') * 1e3:.1f}ms vs PASSIVE {med(passive, 'steady') * 1e3:.1f}ms "
          f"({med(spin, 'steady') / med(passive, 'steady'):.2f}x); start {med(spin, 'start'):.3f}s vs "
          f"{med(passive, 'start'):.3f}s")


if __name__ == "__main__":
    main()
