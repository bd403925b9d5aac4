"""Speed of a merged ViTPose++ task model against a plain ViTPose of the same size, measured in one run.

The ViTPose++ model (random weights, every expert different) is merged for one task with
``merge_experts``; its heatmaps are checked against the multi-task model first. Then three models are
timed, interleaved so that machine load affects them alike:

* ``vitpose-{size}``: the plain ViTPose (the reference),
* ``vitpose++-{size} merged``: the merged task model (expected: the same speed, ratio ~1.00),
* ``vitpose++-{size} MoE``: the unmerged multi-task model run for the same task (for context).

Throughput is the median over repeats of images / second; ratios are against plain ViTPose.
On CUDA (if present) the models run in pure bf16.

    PYTHONPATH=. python benchmarks/merged_speed.py [--size b] [--batch 8] [--repeats 9]
"""
from __future__ import annotations

import argparse
import datetime

import torch

from poseforge.models import create_model
from poseforge.models.merge import merge_experts

from _common import cpu_name, race  # benchmarks/_common.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="b", choices=["tiny", "s", "b", "l", "h"])
    parser.add_argument("--task", default="coco", help="ViTPose++ task to merge (default coco)")
    parser.add_argument("--batch", type=int, default=None, help="crops per forward (default 8 on CPU, 128 on CUDA)")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch or (128 if cuda else 8)
    print(f"merged_speed benchmark, {datetime.date.today()}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if cuda else cpu_name()}, "
          f"{torch.get_num_threads()} threads")

    torch.manual_seed(0)
    plus_name = "vitpose++-tiny" if args.size == "tiny" else f"vitpose++-{args.size}"
    plus = create_model(plus_name).eval()
    with torch.no_grad():
        for p in plus.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # experts and heads differ from each other
    merged = merge_experts(plus, args.task).eval()
    task = plus.config.task_index(args.task)
    keypoint_set = plus.config.tasks[task].keypoint_set
    plain = create_model(f"vitpose-{args.size}", keypoint_set=keypoint_set).eval()

    w, h = plus.config.input_size
    x = torch.randn(batch, 3, h, w)
    with torch.inference_mode():
        diff = (merged(x).heatmaps - plus(x, task).heatmaps).abs().max().item()
    print(f"merged {plus_name} task '{args.task}' vs the MoE model: max abs heatmap difference {diff:.2e} (fp32)")
    print(f"parameters: plain {plain.num_parameters() / 1e6:.2f}M, merged {merged.num_parameters() / 1e6:.2f}M, "
          f"MoE {plus.num_parameters() / 1e6:.2f}M")

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        for m in (plain, merged, plus):
            m.to(device).prepare_for_inference(dtype=torch.bfloat16)
        x = x.to(device, torch.bfloat16)
    runners = {f"vitpose-{args.size} (plain)": lambda: plain(x),
               f"{plus_name} merged '{args.task}'": lambda: merged(x),
               f"{plus_name} MoE, task '{args.task}'": lambda: plus(x, task)}
    with torch.inference_mode():
        results = race(runners, batch, args.repeats, warmup=2 if not cuda else 10, sync=sync)
    reference = f"vitpose-{args.size} (plain)"
    dtype = "pure bf16" if cuda else "fp32"
    print(f"\n{'CUDA' if cuda else 'CPU'} {dtype}, batch {batch}, {w}x{h} crops, median of {args.repeats} (interleaved)")
    for name, ips in results.items():
        print(f"  {name:<34s} {ips:9.2f} img/s   ratio vs plain: {ips / results[reference]:5.3f}x")


if __name__ == "__main__":
    main()
