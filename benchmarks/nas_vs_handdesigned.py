"""The once-for-all NAS result against the hand-designed LitePose-XS at an equal MACs budget, after equal CPU time.

Both sides train on the same synthetic scenes of ``--people`` people (``litepose-xs-synth``'s data and recipe at
``--resolution``, a constant learning rate after a short warm-up so that a time budget cuts no schedule short) for
the same ``--cpu-minutes`` of CPU time of the training process (all its threads: on a shared machine, wall time
would charge one side for a neighbour's burst), and are scored on the same held-out scenes (flip test):

* **hand-designed**: LitePose-XS (the zoo's LitePose-Auto-XS architecture) at ``--resolution``, from scratch for
  the whole budget. Its MACs (ptflops, the LitePose paper's convention) are the budget of the search.
* **NAS**: the official LitePose supernet (its search space at the resolutions up to ``--resolution``; LitePose-XS
  is one of its subnets) trained with the sandwich rule for ``--supernet-share`` of the budget, the evolutionary
  search within the budget (fitness: AP on a *separate* held-out set after BatchNorm recalibration, so the final
  score is not the one the search selected on; its time is charged to the budget), and the chosen subnet
  fine-tuned from its inherited weights for the rest of the budget. Its AP before fine-tuning (inherited weights,
  recalibrated) is printed too.
* **NAS architecture from scratch** (unless ``--no-scratch``): the found subnet trained like the hand-designed
  model for the whole budget - the architecture alone, without the cost (or the head start) of weight sharing.

Printed: each model's architecture, MACs (ptflops and true), parameters, CPU latency of one image (batch 1,
medians of interleaved repeats in this run), training CPU seconds and held-out AP, and the NAS / hand-designed ratios.
The machine is shared: its load is printed (CPU time still varies with a neighbour's cache and memory traffic).

    PYTHONPATH=. python benchmarks/nas_vs_handdesigned.py            # small: 8 CPU minutes a side at 128x128
    PYTHONPATH=. python benchmarks/nas_vs_handdesigned.py --cpu-minutes 120 --resolution 256 --people 1-6 \\
        --batch 16 --test-images 200 --search-images 64 --calib-images 64 --population 16 --generations 4  # longer
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from poseforge.data.evalsets import synthetic_eval_set
from poseforge.evaluation.evaluator import evaluate
from poseforge.models import build_model, model_config
from poseforge.models.complexity import count_macs, count_parameters
from poseforge.models.loading import skip_meta_init
from poseforge.models.nas import extract_subnet, subnet_macs
from poseforge.models.nas.evolution import EvolutionSettings
from poseforge.train import Trainer, load_config
from poseforge.train.config import ModelSection
from poseforge.train.nas import (calibration_images, measure_latency_ms, plain_model_section, recalibrate_batchnorm,
                                 search_supernet)

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

TEST_SEED, SEARCH_SEED = 1_000_003, 2_000_003  # the final score's held-out scenes, and the search's


class TimedTrainer(Trainer):
    """The shared Trainer, stopping (resumably, as at ``max_steps``) once its process has spent ``budget`` CPU
    seconds training (all threads; the data worker's rendering is the same for every side and not counted)."""

    def __init__(self, *args, budget: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.budget = float(budget)
        self._cpu_start: float | None = None

    def fit(self) -> dict:
        self._cpu_start = time.process_time()
        summary = super().fit()
        summary["cpu_seconds"] = time.process_time() - self._cpu_start
        return summary

    def _stop_reached(self) -> bool:
        over = self._cpu_start is not None and time.process_time() - self._cpu_start >= self.budget
        return super()._stop_reached() or over


def recipe(args: argparse.Namespace, model: ModelSection, name: str):
    """litepose-xs-synth's data and optimizer at ``--resolution``, a constant LR, no validation while training."""
    r, (lo, hi) = args.resolution, args.people
    config = load_config("litepose-xs-synth", {
        "name": name, "data.synthetic.image_size": [r, r], "data.synthetic.people": [lo, hi],
        "data.synthetic.val_people": [lo, hi], "data.batch_size": args.batch, "data.val_batch_size": args.batch,
        "data.num_workers": 1, "schedule.epochs": 1, "schedule.steps_per_epoch": 1_000_000,
        "schedule.warmup_iters": 20, "schedule.kind": "constant", "optim.lr": args.lr, "val_interval": 0,
        "log_interval": 10, "threads": args.threads, "seed": args.seed,
    })
    return dataclasses.replace(config, model=model)


def score(model, test) -> float:
    result = evaluate(model.eval(), test, flip_test=True, batch_size=16)
    return float(result.stats["AP"])


def latencies(models: dict, rounds: int) -> dict[str, float]:
    """Median ms of one image per model, the models interleaved round by round (5 passes a round)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(measure_latency_ms(model, model.input_size, repeats=5, warmup=1))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-minutes", type=float, default=8.0,
                        help="CPU minutes (all threads of the process) per side (default 8)")
    parser.add_argument("--resolution", type=int, default=128, help="scene and LitePose-XS input side (default 128)")
    parser.add_argument("--people", type=lambda s: tuple(int(v) for v in s.split("-")), default=(1, 1),
                        help="people per scene, MIN-MAX (default 1-1: at this budget AP stays 0 with 1-3, see the results)")
    parser.add_argument("--batch", type=int, default=8, help="images per step (default 8)")
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate (litepose-xs-synth's: 2e-3)")
    parser.add_argument("--supernet-share", type=float, default=0.6,
                        help="share of the NAS budget that trains the supernet (default 0.6)")
    parser.add_argument("--population", type=int, default=8, help="search population (default 8)")
    parser.add_argument("--generations", type=int, default=2, help="search generations (default 2)")
    parser.add_argument("--search-images", type=int, default=32, help="held-out scenes the search scores on")
    parser.add_argument("--calib-images", type=int, default=32, help="BatchNorm recalibration images (default 32)")
    parser.add_argument("--test-images", type=int, default=64, help="held-out scenes of the final score (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-rounds", type=int, default=5, help="interleaved latency rounds (default 5)")
    parser.add_argument("--no-scratch", action="store_true",
                        help="skip training the found architecture from scratch for the budget (a third run)")
    parser.add_argument("--workdir", default=None, help="run folders (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nas-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    budget_s = args.cpu_minutes * 60
    r = args.resolution
    print("command: PYTHONPATH=. python " + shlex.join(sys.argv))
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}; {cpu_name()}; {args.threads} threads; "
          f"{load_average()} at start; work folder {work}")

    hand = ModelSection(name="litepose-xs", overrides={"keypoint_set": "coco17", "input_size": [r, r]})
    with torch.device("meta"), skip_meta_init():
        hand_meta = build_model(model_config(hand.name, **hand.overrides))
    budget_macs = count_macs(hand_meta, (r, r), convention="ptflops")
    resolutions = sorted({v for v in (r // 2, 3 * r // 4, r) if v % 16 == 0})
    supernet_section = ModelSection(name="litepose-supernet",
                                    overrides={"keypoint_set": "coco17", "space": {"resolutions": resolutions}})
    print(f"budget: LitePose-XS at {r}x{r}, {budget_macs / 1e9:.3f} GMACs (ptflops); supernet resolutions {resolutions}")
    test = synthetic_eval_set(num_images=args.test_images, seed=TEST_SEED, image_size=(r, r), people=args.people,
                              keypoint_set="coco17")

    # ----- hand-designed: the whole budget from scratch
    trainer = TimedTrainer(recipe(args, hand, "hand-designed"), work / "hand", budget=budget_s, progress=False)
    hand_summary = trainer.fit()
    hand_model = trainer.estimator.eval()
    hand_ap = score(hand_model, test)
    print(f"hand-designed: {hand_summary['steps']} steps in {hand_summary['cpu_seconds']:.0f} CPU s "
          f"({hand_summary['seconds']:.0f} s wall), held-out AP {hand_ap:.4f}")

    # ----- NAS: supernet, search, fine-tune - the same budget in all
    sup_config = recipe(args, supernet_section, "supernet")
    trainer = TimedTrainer(sup_config, work / "supernet", budget=args.supernet_share * budget_s, progress=False)
    sup_summary = trainer.fit()
    supernet = trainer.estimator.eval()
    print(f"supernet: {sup_summary['steps']} sandwich steps in {sup_summary['cpu_seconds']:.0f} CPU s "
          f"({sup_summary['seconds']:.0f} s wall)")
    start = time.process_time()
    found = search_supernet(
        supernet, sup_config, macs=budget_macs, convention="ptflops", calib_images=args.calib_images,
        settings=EvolutionSettings(population=args.population, generations=args.generations, seed=args.seed),
        val=f"synthetic:seed={SEARCH_SEED},images={args.search_images},size={r}x{r},people={args.people[0]}-{args.people[1]}")
    search_s = time.process_time() - start
    best = supernet.subnets.check(found["best"]["subnet"])
    print(f"search: {found['evaluated']} subnets scored in {search_s:.0f} CPU s; best {best.key()} "
          f"({found['best']['macs']['ptflops'] / 1e9:.3f} GMACs ptflops), search-set AP {found['best']['ap']:.4f}")
    inherited = recalibrate_batchnorm(extract_subnet(supernet, best, name="litepose-nas"),
                                      calibration_images(sup_config, supernet, args.calib_images, args.seed))
    inherited_ap = score(inherited, test)
    left = budget_s - sup_summary["cpu_seconds"] - search_s
    tune_summary = {"steps": 0, "seconds": 0.0, "cpu_seconds": 0.0}
    nas_model = inherited
    if left > 0:
        inherited.save_pretrained(work / "finetune" / "init")
        tune_config = recipe(args, plain_model_section(inherited.config, str(work / "finetune" / "init")), "nas-finetune")
        trainer = TimedTrainer(tune_config, work / "finetune", budget=left, progress=False)
        tune_summary = trainer.fit()
        nas_model = trainer.estimator.eval()
    nas_ap = score(nas_model, test)
    nas_seconds = sup_summary["cpu_seconds"] + search_s + tune_summary["cpu_seconds"]
    print(f"NAS: fine-tuned {tune_summary['steps']} steps in {tune_summary['cpu_seconds']:.0f} CPU s; held-out AP {nas_ap:.4f} "
          f"(inherited weights before fine-tuning: {inherited_ap:.4f})")
    scratch = None
    if not args.no_scratch:  # the architecture alone: the found subnet from scratch for the whole budget
        trainer = TimedTrainer(recipe(args, plain_model_section(inherited.config), "nas-scratch"), work / "scratch",
                               budget=budget_s, progress=False)
        scratch_summary = trainer.fit()
        scratch = (trainer.estimator.eval(), score(trainer.estimator, test), scratch_summary)
        print(f"NAS architecture from scratch: {scratch_summary['steps']} steps in {scratch_summary['cpu_seconds']:.0f} "
              f"CPU s, "
              f"held-out AP {scratch[1]:.4f}")

    # ----- the table
    lat = latencies({"hand": hand_model, "nas": nas_model}, args.latency_rounds)
    rows = []
    entries = [("LitePose-XS (hand-designed)", hand_model, hand_ap, hand_summary["cpu_seconds"]),
               ("NAS subnet (supernet + search + fine-tuning)", nas_model, nas_ap, nas_seconds)]
    if scratch is not None:
        entries.append(("NAS architecture from scratch", scratch[0], scratch[1], scratch[2]["cpu_seconds"]))
    for label, model, ap, seconds in entries:
        rows.append({"model": label, "architecture": model.config.backbone.to_dict() | {"deconv_channels": list(
            model.config.head.deconv_channels), "input": list(model.input_size)},
                     "gmacs_ptflops": count_macs(model, model.input_size, convention="ptflops") / 1e9,
                     "gmacs_true": count_macs(model, model.input_size) / 1e9, "params_m": count_parameters(model) / 1e6,
                     "latency_ms": lat["hand" if "hand-designed" in label else "nas"], "train_s": seconds, "ap": ap})
    assert rows[1]["gmacs_ptflops"] * 1e9 == subnet_macs(supernet.config, best, "ptflops") <= budget_macs
    print(f"\n{load_average()} at the end\n")
    print("| model | input | GMACs (ptflops) | GMACs (true) | params (M) | CPU latency (ms, b=1) | training (CPU s) | held-out AP |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['model']} | {row['architecture']['input'][0]} | {row['gmacs_ptflops']:.3f} | {row['gmacs_true']:.3f} | "
              f"{row['params_m']:.2f} | {row['latency_ms']:.1f} | {row['train_s']:.0f} | {row['ap']:.4f} |")
    ratio = nas_ap / hand_ap if hand_ap > 0 else float("nan")
    if scratch is not None:
        print(f"NAS architecture from scratch / hand-designed (equal training time): AP "
              f"x{scratch[1] / hand_ap if hand_ap > 0 else float('nan'):.2f}")
    print(f"\nNAS / hand-designed: AP x{ratio:.2f}, MACs x{rows[1]['gmacs_ptflops'] / rows[0]['gmacs_ptflops']:.2f}, "
          f"latency x{rows[1]['latency_ms'] / rows[0]['latency_ms']:.2f}; NAS subnet {best.key()}; NAS CPU time: supernet "
          f"{sup_summary['cpu_seconds']:.0f} s ({sup_summary['steps']} sandwich steps) + search {search_s:.0f} s "
          f"+ fine-tuning {tune_summary['cpu_seconds']:.0f} s ({tune_summary['steps']} steps); inherited-weights AP "
          f"{inherited_ap:.4f}; hand-designed {hand_summary['steps']} steps")
    record = {"args": {k: v for k, v in vars(args).items()}, "budget_macs_ptflops": budget_macs, "rows": rows,
              "search": {k: found[k] for k in ("best", "history", "evaluated", "seconds")}, "inherited_ap": inherited_ap,
              "supernet_steps": sup_summary["steps"], "hand_steps": hand_summary["steps"],
              "finetune_steps": tune_summary["steps"], "search_seconds": search_s,
              "scratch": None if scratch is None else {"ap": scratch[1], "steps": scratch[2]["steps"]}}
    (work / "results.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
