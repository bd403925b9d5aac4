"""``poseforge nas``: once-for-all architecture search of LitePose (train a supernet, search it, export a subnet).

    poseforge nas train --config litepose-xs-synth --out runs/supernet          # the sandwich rule, resumable
    poseforge nas train --out runs/supernet --resume
    poseforge nas search --supernet runs/supernet --macs 1.2G --out search.json  # ptflops MACs, as the paper
    poseforge nas search --supernet runs/supernet --latency-ms 40 --out search-40ms.json
    poseforge nas export --supernet runs/supernet --subnet search.json --out models/litepose-nas --finetune-epochs 5

``--macs`` counts by the convention of the LitePose paper (``ptflops``: LitePose-Auto-XS is "1.2 GMACs" at 256 by it,
0.88 G true multiply-accumulates); ``--macs-convention torch`` budgets true MACs instead.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import PoseforgeError

log = logging.getLogger("poseforge")

_MODEL_FILES = ("model.safetensors", "config.json", "nas.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="nas_command", metavar="{train,search,export}", required=True)

    train = sub.add_parser("train", help="train a LitePose supernet with the sandwich rule (the shared Trainer)")
    train.add_argument("--config", metavar="NAME|FILE.yaml",
                       help="a LitePose recipe (preset or YAML; its model becomes litepose-supernet) or a config whose "
                            "model is litepose-supernet")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set model.overrides.space={resolutions: [128, 192, 256]}")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")

    search = sub.add_parser("search", help="evolutionary search of a trained supernet under a MACs or latency budget")
    search.add_argument("--supernet", required=True, metavar="RUN_DIR", help="the 'nas train' run folder")
    budget = search.add_mutually_exclusive_group(required=True)
    budget.add_argument("--macs", metavar="N", help="MACs budget, e.g. 1.2G (convention: --macs-convention)")
    budget.add_argument("--latency-ms", type=float, metavar="MS",
                        help="CPU latency budget: median ms of one forward pass (batch 1) on this machine")
    search.add_argument("--macs-convention", default="ptflops", choices=["ptflops", "torch", "exact", "hrnet"],
                        help="how --macs counts (default ptflops, the LitePose paper's; torch: true MACs)")
    search.add_argument("--out", required=True, metavar="FILE.json", help="the search result to write")
    search.add_argument("--population", type=int, default=40, help="population size (default 40, LitePose's)")
    search.add_argument("--generations", type=int, default=40, help="generations (default 40)")
    search.add_argument("--parent-ratio", type=float, default=0.25, help="share kept as parents (default 0.25)")
    search.add_argument("--mutation-ratio", type=float, default=0.5, help="share of children by mutation (default 0.5)")
    search.add_argument("--mutate-prob", type=float, default=0.1, help="per-gene mutation probability (default 0.1)")
    search.add_argument("--seed", type=int, default=0, help="seeds the evolution and the calibration images")
    search.add_argument("--calib-images", type=int, default=64, metavar="N",
                        help="training images to recalibrate each subnet's BatchNorm statistics on (default 64)")
    search.add_argument("--val", metavar="SPEC", help="held-out set to score subnets on, as data.val (e.g. "
                                                      "synthetic:seed=7,images=64; default: the run's)")
    search.add_argument("--val-images", type=int, metavar="N", help="synthetic held-out images (default: the run's)")
    search.add_argument("--latency-repeats", type=int, default=10, help="timed passes per latency (median; default 10)")
    search.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    search.add_argument("--force", action="store_true", help="replace an existing --out file")

    export = sub.add_parser("export", help="extract a subnet with its weights, optionally fine-tune it, save it")
    export.add_argument("--supernet", required=True, metavar="RUN_DIR", help="the 'nas train' run folder")
    export.add_argument("--subnet", required=True, metavar="FILE.json", help="a 'nas search' result (its best) or a subnet")
    export.add_argument("--out", required=True, metavar="MODEL_DIR", help="the model folder to write")
    export.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                        help="fine-tune the extracted subnet for N epochs with the supernet run's data and recipe")
    export.add_argument("--run", metavar="RUN_DIR", help="the fine-tuning run folder (default: <out>-finetune)")
    export.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the fine-tuning config, e.g. --set optim.lr=5e-4")
    export.add_argument("--calib-images", type=int, default=64, metavar="N",
                        help="training images to recalibrate the BatchNorm statistics on (default 64)")
    export.add_argument("--name", default="litepose-nas", help="the exported model's name (default litepose-nas)")
    export.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    export.add_argument("--force", action="store_true", help="replace a model already in --out")


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "search": _search, "export": _export}[args.nas_command](args)


def _train(args: argparse.Namespace) -> int:
    from ..train.config import dump_yaml, load_config
    from ..train.nas import supernet_train_config

    out = Path(args.out)
    if args.resume:
        if not (out / "last.pt").is_file():
            raise PoseforgeError(f"{out}: nothing to resume (no last.pt)")
        config = load_config(out / "config.yaml", args.overrides)
    else:
        if not args.config:
            raise PoseforgeError("--config NAME|FILE.yaml is required (or --resume)")
        if (out / "last.pt").exists():
            raise PoseforgeError(f"{out} already holds a training run (last.pt); continue it with --resume or choose "
                                 "another --out")
        config = supernet_train_config(load_config(args.config, args.overrides))
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    from ..train.engine import Trainer

    trainer = Trainer(config, out, resume=args.resume)
    summary = trainer.fit()
    best, metric = summary["best_score"], summary["best_metric"]
    print(f"{'stopped at max_steps' if summary['stopped_early'] else 'done'}: {summary['epochs']} epochs, "
          f"{summary['steps']} steps in {summary['seconds'] / 60:.1f} min; "
          + (f"largest subnet {metric} {best:.4f} (epoch {summary['best_epoch']}); " if best is not None else "")
          + f"supernet run {out}; next: poseforge nas search --supernet {out} --macs 1.2G --out search.json")
    return 0


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _search(args: argparse.Namespace) -> int:
    from ..models.nas.evolution import EvolutionSettings
    from ..train.nas import load_supernet_run, parse_macs, search_supernet
    from .common import refuse_overwrite

    out = Path(args.out)
    refuse_overwrite([out], [Path(args.supernet) / "config.yaml"], args.force)
    macs = parse_macs(args.macs) if args.macs is not None else None
    settings = EvolutionSettings(population=args.population, generations=args.generations,
                                 parent_ratio=args.parent_ratio, mutation_ratio=args.mutation_ratio,
                                 mutate_prob=args.mutate_prob, seed=args.seed)
    _threads(args.threads)
    supernet, config, weights = load_supernet_run(args.supernet)
    record = search_supernet(supernet, config, macs=macs, latency_ms=args.latency_ms, convention=args.macs_convention,
                             settings=settings, calib_images=args.calib_images, val=args.val, val_images=args.val_images,
                             latency_repeats=args.latency_repeats, source=str(weights))
    from ..io import write_json_atomic

    write_json_atomic(out, record, indent=2)
    best = record["best"]
    cost = (f"{best['macs'][args.macs_convention] / 1e9:.3f} GMACs ({args.macs_convention}) <= {macs / 1e9:.3f}"
            if macs is not None else f"{best['latency_ms']:.1f} ms <= {args.latency_ms:g} ms")
    print(f"best subnet {best['key']}: AP {best['ap']:.4f}, {cost}; {record['evaluated']} subnets scored in "
          f"{record['seconds'] / 60:.1f} min; wrote {out}; next: poseforge nas export --supernet {args.supernet} "
          f"--subnet {out} --out MODEL_DIR")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..train.nas import export_subnet, load_supernet_run, read_subnet

    out = Path(args.out)
    existing = [name for name in _MODEL_FILES if (out / name).exists()]
    if existing and not args.force:
        raise PoseforgeError(f"{out / existing[0]}: --out {out} already holds a model; use --force to replace it or "
                             "choose another folder")
    if args.finetune_epochs < 0:
        raise PoseforgeError(f"--finetune-epochs {args.finetune_epochs}: expected >= 0")
    run_dir = Path(args.run) if args.run else Path(f"{out}-finetune")
    if args.finetune_epochs and (run_dir / "last.pt").exists():
        raise PoseforgeError(f"{run_dir} already holds a training run (last.pt); continue it with poseforge train "
                             f"--resume --out {run_dir}, or choose another --run")
    subnet = read_subnet(args.subnet)
    _threads(args.threads)
    supernet, config, weights = load_supernet_run(args.supernet)
    record = export_subnet(supernet, config, subnet, out, finetune_epochs=args.finetune_epochs, run_dir=run_dir,
                           overrides=args.overrides, calib_images=args.calib_images, name=args.name,
                           source=str(weights))
    tuned = record.get("finetune")
    print(f"exported {record['key']} ({record['macs']['ptflops'] / 1e9:.3f} GMACs ptflops, "
          f"{record['macs']['torch'] / 1e9:.3f} G true MACs) to {out}"
          + (f" after {tuned['epochs']} fine-tuning epochs ({tuned['run']})" if tuned else "")
          + f"; load it with poseforge.load_model({json.dumps(str(out))})")
    return 0
