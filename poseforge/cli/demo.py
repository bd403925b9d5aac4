"""``poseforge demo``: the whole pipeline on fresh synthetic scenes (:func:`poseforge.inference.demo.run_demo`)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import PoseforgeError
from ..inference.demo import DEMO_SEED, DemoReport
from .common import size_argument

# the files run_demo writes into --out (plus overlays/scene_*.jpg); summary.json marks an earlier demo
DEMO_FILES = ("contact_sheet.jpg", "ground_truth.json", "results_gt_boxes.json", "results_detected.json", "summary.json")


def check_out(out: Path, force: bool) -> None:
    """Refuse, before rendering, a folder whose files of the demo's names are not an earlier demo's (no
    summary.json): a user's ``contact_sheet.jpg`` or ``ground_truth.json`` is not ours to replace."""
    if force or not out.is_dir() or (out / "summary.json").is_file():
        return  # an earlier demo is replaced: running the demo again is what it is for
    clashes = [out / name for name in DEMO_FILES if (out / name).exists()]
    if (out / "overlays").is_dir():
        clashes += sorted((out / "overlays").glob("scene_*.jpg"))[:1]
    if clashes:
        raise PoseforgeError(f"{clashes[0]}: exists and is not from an earlier demo; use --force to replace it or "
                             "choose another --out")

def print_report(report: DemoReport, console: Any) -> None:
    """The scores table and the written files."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("COCO AP (OKS), mmpose protocol")
    for name in ("AP", "AP50", "AP75", "AR"):
        table.add_column(name, justify="right")
    rows = (("poses in ground-truth boxes", report.pose_ap_gt_boxes, "AR"),
            ("poses in detected boxes", report.pose_ap_detected, "AR"),
            ("person detector (box AP)", report.detector_box_ap, "AR100"))
    for label, stats, recall in rows:
        table.add_row(label, *(f"{stats.get(k, float('nan')):.3f}" for k in ("AP", "AP50", "AP75", recall)))
    console.print()
    console.print(table)
    console.print()
    out = report.out
    console.print(f"[bold]wrote  [/]  {out / 'contact_sheet.jpg'}", soft_wrap=True)
    console.print(f"         {out / 'overlays'}/ ({report.num_images} images, poses drawn)", soft_wrap=True)
    console.print(f"         {out}/*.json (ground truth, results, summary)", soft_wrap=True)
    console.print(f"[bold]check  [/]  poseforge eval --gt {out / 'ground_truth.json'} --results "
                  f"{out / 'results_detected.json'} --rescore", soft_wrap=True)
    console.print(f"[bold green]done[/] in {report.seconds['total']:.1f}s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="poseforge-demo", metavar="DIR", help="output folder (default: ./poseforge-demo)")
    parser.add_argument("--images", type=int, default=48, metavar="N", help="synthetic scenes to render (default: 48)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"scene seed (default: {DEMO_SEED}, unused in training)")
    parser.add_argument("--size", type=size_argument, default=(640, 480), metavar="WxH", help="scene size (default: 640x480)")
    parser.add_argument("--model", default="bundled", help="pose model (default: the bundled ViTPose)")
    parser.add_argument("--detector", default="bundled", help="person detector: bundled or a .onnx export (default: bundled)")
    parser.add_argument("--device", default="auto", help="cpu, cuda ... (default: CUDA when available)")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even where files of the demo's names exist that an earlier demo did not write")


def run(args: argparse.Namespace) -> int:
    # Before torch loads OpenMP: idle worker threads sleep instead of spinning, which keeps small
    # kernels fast when the cores are shared (measured 5x on a busy 2-core machine).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    check_out(Path(args.out), args.force)
    from rich.console import Console

    from ..inference.demo import run_demo

    console = Console(highlight=False)
    model = "the bundled ViTPose" if args.model == "bundled" else args.model
    console.print(f"[bold]poseforge demo[/]: synthetic people -> person detector -> {model} -> COCO AP")
    report = run_demo(args.out, args.images, args.seed, args.size, model=args.model, detector=args.detector,
                      device=args.device, console=console)
    print_report(report, console)
    return 0
