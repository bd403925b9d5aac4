"""Once-for-all architecture search of LitePose: train a supernet, search it under a budget, export a subnet.

* **train** - the shared :class:`~poseforge.train.engine.Trainer` with a ``litepose-supernet`` model
  (:mod:`poseforge.models.nas.supernet`): the sandwich rule lives in the supernet's ``loss``, so a supernet run
  is an ordinary run folder (``config.yaml``, ``last.pt``, ``best/``; ``--resume`` continues it exactly, the
  subnet draws included). :func:`supernet_train_config` turns a plain LitePose recipe into its supernet.
* **search** - :func:`search_supernet`: evolution (:func:`~poseforge.models.nas.evolution.evolution_search`)
  under a MACs budget (closed-form count, any :func:`~poseforge.models.complexity.count_macs` convention;
  ``ptflops`` by default, the convention of the LitePose paper's "1.2 GMACs") or a measured CPU latency budget
  (median forward time of the extracted subnet on this machine). Fitness is the held-out AP of the subnet with
  the supernet's weights after its BatchNorm statistics are recalibrated on a few training images (OFA's
  ``set_running_statistics``, LitePose's ``calibrate_test.py``): without it, a subnet normalizes with the
  largest subnet's statistics and scores near zero. Deterministic for a seed with a MACs budget.
* **export** - :func:`export_subnet`: the subnet extracted with its weights, recalibrated, optionally
  fine-tuned by the Trainer (a run whose ``config.yaml`` names the plain architecture and starts from the
  extracted weights, so ``poseforge train --resume`` continues it), saved with ``save_pretrained`` and a
  ``nas.json`` record.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import collate
from ..errors import PoseforgeError
from ..evaluation.evaluator import evaluate
from ..io import write_json_atomic
from ..models import load_model, model_config
from ..models.complexity import CONVENTIONS
from ..models.nas import LitePoseSupernet, Subnet, SupernetConfig, extract_subnet, subnet_macs
from ..models.nas.evolution import EvolutionSettings, evolution_search
from .config import ModelSection, TrainConfig, apply_overrides, config_to_dict, load_config
from .data import TrainSamples, build_train_source, build_val_sets

__all__ = ["supernet_train_config", "load_supernet_run", "calibration_images", "recalibrate_batchnorm",
           "measure_latency_ms", "SubnetScorer", "search_supernet", "export_subnet", "plain_model_section",
           "parse_macs", "SEARCH_FORMAT", "DEFAULT_MACS_CONVENTION"]

log = logging.getLogger("poseforge")

SEARCH_FORMAT = "poseforge-nas-search/1"
# The LitePose paper's MACs (LitePose-Auto-XS "1.2 GMACs") are ptflops figures (poseforge.models.complexity).
DEFAULT_MACS_CONVENTION = "ptflops"


# ---------------------------------------------------------------------------------------------- train
def supernet_train_config(config: TrainConfig) -> TrainConfig:
    """``config`` unchanged when its model is a supernet; a plain LitePose (or any bottom-up) recipe gets the
    ``litepose-supernet`` model with the recipe's keypoint set instead (data, optimizer and schedule kept).
    ``compile="step"`` becomes ``"model"``: a sandwich step draws its subnets in Python."""
    model = model_config(config.model.name, **config.model.overrides)
    if not isinstance(model, SupernetConfig):
        if getattr(model, "type", None) != "bottomup":
            raise PoseforgeError(f"poseforge nas train: {config.model.name} is not a bottom-up model; give a LitePose "
                                 "recipe (e.g. litepose-xs-synth) or a config whose model is litepose-supernet")
        log.info(f"{config.name}: training the LitePose supernet in place of {config.model.name} "
                 f"({model.keypoint_set} keypoints); change it with --set model.overrides.<field>=...")
        config = dataclasses.replace(config, model=ModelSection(name="litepose-supernet",
                                                                overrides={"keypoint_set": model.keypoint_set}))
    if config.compile == "step":
        config = dataclasses.replace(config, compile="model")
    return config


def load_supernet_run(path: str | Path) -> tuple[LitePoseSupernet, TrainConfig, Path]:
    """The supernet of a ``nas train`` run folder (its ``last.pt`` weights, EMA ones when on: the state every
    subnet trained longest) and the run's training config."""
    run = Path(path)
    if not (run / "config.yaml").is_file():
        raise PoseforgeError(f"--supernet {run}: not a training run folder (no config.yaml); give the folder of "
                             "'poseforge nas train --out'")
    config = load_config(run / "config.yaml")
    weights = run / "last.pt" if (run / "last.pt").is_file() else run / "best"
    model = load_model(weights)
    if not isinstance(model, LitePoseSupernet):
        raise PoseforgeError(f"--supernet {run}: its model is {model.config.name} ({model.config.type}), not a "
                             "litepose-supernet")
    return model, config, weights


# ---------------------------------------------------------------------------------------------- scoring
def calibration_images(config: TrainConfig, supernet: LitePoseSupernet, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` training images ``[count, 3, R, R]`` uint8 at the supernet's largest resolution, cut with its
    training transform (augmentation as configured: the statistics of the images the supernet learned from)."""
    if count < 1:
        raise PoseforgeError(f"calibration images: expected >= 1, got {count}")
    supernet.set_active("largest")
    data = config.data
    if data.train.lower() == "synthetic":  # render just these (cached, from the training seed)
        data = dataclasses.replace(data, synthetic=dataclasses.replace(data.synthetic, train_images=count, fresh=False))
    source = build_train_source(data, supernet)
    indices = sorted(random.Random(seed).sample(range(len(source)), min(count, len(source))))
    samples = TrainSamples(source, [supernet.transform(True, data.augment)], seed)
    return collate(samples.__getitems__([(0, p, i) for p, i in enumerate(indices)]))["image"]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) from ``images``
    (uint8 ``[N, 3, H, W]``, resized to the model's input) in training mode; returns the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # an exact average over the calibration batches
    model.train()
    try:
        side = tuple(model.input_size[::-1])  # (h, w)
        for chunk in images.split(batch_size):
            x = model.normalize(chunk)
            if tuple(x.shape[-2:]) != side:
                x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return model


@torch.inference_mode()
def measure_latency_ms(model: nn.Module, input_size: Sequence[int], repeats: int = 10, warmup: int = 3) -> float:
    """Median wall time (ms) of one forward pass of a ``[1, 3, h, w]`` input on the model's device (CPU here)."""
    model.eval()
    w, h = (int(v) for v in input_size)
    x = torch.randn(1, 3, h, w, device=next(model.parameters()).device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


class SubnetScorer:
    """Held-out AP of subnets of a supernet (extracted, BatchNorm recalibrated, scored by the model's metric
    on ``eval_set``); each distinct subnet is scored once."""

    def __init__(self, supernet: LitePoseSupernet, eval_set: Any, calibration: torch.Tensor, *,
                 batch_size: int = 32, flip_test: bool | None = None) -> None:
        self.supernet, self.eval_set, self.calibration = supernet.eval(), eval_set, calibration
        self.batch_size, self.flip_test = batch_size, flip_test
        self.scores: dict[str, float] = {}
        self.seconds = 0.0

    def model(self, subnet: Subnet) -> nn.Module:
        """The extracted subnet with recalibrated BatchNorm statistics (eval mode)."""
        return recalibrate_batchnorm(extract_subnet(self.supernet, subnet), self.calibration, self.batch_size)

    def __call__(self, subnet: Subnet) -> float:
        key = subnet.key()
        if key not in self.scores:
            start = time.perf_counter()
            result = evaluate(self.model(subnet), self.eval_set, flip_test=self.flip_test, batch_size=self.batch_size)
            self.scores[key] = float(result.stats[result.primary])
            self.seconds += time.perf_counter() - start
        return self.scores[key]


# ---------------------------------------------------------------------------------------------- search
_MACS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(?:macs?)?\s*$", re.IGNORECASE)


def parse_macs(text: str | float) -> float:
    """``"1.2G"``, ``"850M"``, ``"1.2e9"`` or a number -> MACs."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _MACS.match(str(text))
        if not match:
            raise PoseforgeError(f"--macs {text}: expected a number with an optional K/M/G/T suffix, e.g. 1.2G")
        value = float(match[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[match[2].lower()]
    if not math.isfinite(value) or value <= 0:
        raise PoseforgeError(f"--macs {text}: expected a positive budget")
    return value


def search_supernet(supernet: LitePoseSupernet, config: TrainConfig, *, macs: float | None = None,
                    latency_ms: float | None = None, convention: str = DEFAULT_MACS_CONVENTION,
                    settings: EvolutionSettings | None = None, calib_images: int = 64,
                    val: str | None = None, val_images: int | None = None, flip_test: bool | None = None,
                    latency_repeats: int = 10, source: str = "") -> dict[str, Any]:
    """Evolutionary search of ``supernet`` for the best held-out AP within a MACs or a latency budget (exactly
    one); ``config`` is the supernet run's training config (its data: calibration images and the held-out set,
    which ``val`` - a spec as ``data.val``, e.g. ``synthetic:seed=5,images=64`` - and ``val_images`` replace).
    Returns the JSON-ready record :func:`export_subnet` reads (format :data:`SEARCH_FORMAT`)."""
    if (macs is None) == (latency_ms is None):
        raise PoseforgeError("give exactly one budget: --macs (e.g. 1.2G) or --latency-ms")
    if convention not in CONVENTIONS:
        raise PoseforgeError(f"--macs-convention {convention}: expected one of {', '.join(CONVENTIONS)}")
    if latency_ms is not None and not latency_ms > 0:
        raise PoseforgeError(f"--latency-ms {latency_ms}: expected a positive budget")
    changes: dict[str, Any] = {}
    if val is not None:
        changes["data.val"] = val
    if val_images is not None:
        changes["data.synthetic.val_images"] = int(val_images)
    if changes:
        config = apply_overrides(config, changes)
    settings = settings or EvolutionSettings()
    supernet.set_active("largest")
    start = time.perf_counter()
    calibration = calibration_images(config, supernet, calib_images, settings.seed)
    eval_set = build_val_sets(config, supernet)[0].data
    scorer = SubnetScorer(supernet, eval_set, calibration, batch_size=config.data.val_batch_size,
                          flip_test=config.flip_test if flip_test is None else flip_test)
    latencies: dict[str, float] = {}

    def latency(subnet: Subnet) -> float:
        key = subnet.key()
        if key not in latencies:
            latencies[key] = measure_latency_ms(extract_subnet(supernet, subnet), (subnet.resolution,) * 2,
                                                repeats=latency_repeats)
        return latencies[key]

    if macs is not None:
        budget, cost = float(macs), (lambda s: subnet_macs(supernet.config, s, convention))
    else:
        budget, cost = float(latency_ms), latency  # type: ignore[arg-type, assignment]
    found = evolution_search(supernet.subnets, scorer, cost, budget, settings)
    best: Subnet = found["best"]["subnet"]
    record = {
        "format": SEARCH_FORMAT,
        "supernet": source,
        "budget": ({"macs": budget, "convention": convention} if macs is not None else
                   {"latency_ms": budget, "device": "cpu", "threads": torch.get_num_threads(), "batch": 1}),
        "best": {"subnet": best.to_dict(), "key": best.key(), "ap": found["best"]["fitness"],
                 "macs": {c: subnet_macs(supernet.config, best, c) for c in ("ptflops", "torch")},
                 **({"latency_ms": latencies[best.key()]} if latency_ms is not None else {})},
        "held_out": eval_set.name, "calibration_images": int(calibration.shape[0]),
        "evolution": dataclasses.asdict(settings), "history": found["history"], "evaluated": found["evaluated"],
        "tries": found["tries"], "seconds": round(time.perf_counter() - start, 1),
        "scoring_seconds": round(scorer.seconds, 1),
        "largest": {"subnet": supernet.subnets.largest().to_dict(),
                    "macs": subnet_macs(supernet.config, supernet.subnets.largest(), convention)},
    }
    return record


# ---------------------------------------------------------------------------------------------- export
_PLAIN_BASE = "litepose-xs"  # any zoo LitePose entry: the overrides below restate every field


def plain_model_section(config: Any, init: str | None = None) -> ModelSection:
    """A training config's model section that builds exactly the plain LitePose ``config`` (a zoo LitePose entry
    with every architecture field as an override), starting from the weights in ``init``."""
    data = config.to_dict()
    overrides = {k: v for k, v in data["backbone"].items() if k != "type"}
    overrides.update({k: v for k, v in data["head"].items() if k != "type"})
    overrides.update({k: data[k] for k in ("keypoint_set", "input_size", "mean", "std", "flip_test", "codec")})
    rebuilt = model_config(_PLAIN_BASE, **overrides)  # (its name stays the zoo entry's: `name` is not an override)
    if dataclasses.replace(rebuilt, name=config.name) != config:
        raise PoseforgeError(f"cannot restate {config.name} as {_PLAIN_BASE} overrides (the configs differ)")
    return ModelSection(name=_PLAIN_BASE, overrides=overrides, init=init)


def read_subnet(path: str | Path) -> Subnet | dict:
    """The subnet of a ``nas search`` record (its best) or of a plain subnet JSON file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PoseforgeError(f"--subnet {path}: file not found") from None
    except (OSError, ValueError) as e:
        raise PoseforgeError(f"--subnet {path}: not a readable JSON file ({e})") from None
    if isinstance(data, dict) and data.get("format") == SEARCH_FORMAT:
        return data["best"]["subnet"]
    if isinstance(data, dict) and "resolution" in data:
        return data
    raise PoseforgeError(f"--subnet {path}: neither a 'poseforge nas search' result nor a subnet (resolution, widths, ...)")


def export_subnet(supernet: LitePoseSupernet, config: TrainConfig, subnet: Subnet | Mapping[str, Any], out: str | Path,
                  *, finetune_epochs: int = 0, run_dir: str | Path | None = None, overrides: Sequence[str] = (),
                  calib_images: int = 64, seed: int = 0, name: str = "litepose-nas", source: str = "",
                  progress: bool | None = None) -> dict[str, Any]:
    """Extract ``subnet`` from ``supernet``, recalibrate its BatchNorm statistics, optionally fine-tune it for
    ``finetune_epochs`` with the Trainer (``config``'s data and optimizer with ``overrides``; run folder
    ``run_dir``, default ``<out>-finetune``) and save it to ``out`` (``save_pretrained`` + ``nas.json``).
    Returns the ``nas.json`` record."""
    subnet = supernet.subnets.check(subnet)
    model = extract_subnet(supernet, subnet, name=name)
    calibration = calibration_images(config, supernet, calib_images, seed)
    recalibrate_batchnorm(model, calibration, config.data.val_batch_size)
    record: dict[str, Any] = {"subnet": subnet.to_dict(), "key": subnet.key(), "supernet": source,
                              "macs": {c: subnet_macs(supernet.config, subnet, c) for c in ("ptflops", "torch")},
                              "calibration_images": int(calibration.shape[0])}
    if finetune_epochs > 0:
        from .engine import Trainer

        run = Path(run_dir) if run_dir is not None else Path(f"{out}-finetune")
        section = plain_model_section(model.config, str(run / "init"))
        tuned = dataclasses.replace(config, name=f"{name}-finetune", model=section,
                                    schedule=dataclasses.replace(config.schedule, epochs=int(finetune_epochs)))
        tuned = apply_overrides(tuned, list(overrides)) if overrides else tuned
        model.save_pretrained(run / "init")
        summary = Trainer(tuned, run, progress=progress).fit()
        tuned_model = load_model(run)  # best/ when validated, else last.pt
        tuned_model.config = dataclasses.replace(tuned_model.config, name=model.config.name)
        model = tuned_model
        record["finetune"] = {"run": str(run), "epochs": summary["epochs"], "steps": summary["steps"],
                              "best": {summary["best_metric"]: summary["best_score"]} if summary["best_metric"] else None,
                              "minutes": round(summary["seconds"] / 60, 2), "config": config_to_dict(tuned)}
    model.save_pretrained(out)
    write_json_atomic(Path(out) / "nas.json", record, indent=2)
    return record
