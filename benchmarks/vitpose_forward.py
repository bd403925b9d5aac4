"""Forward throughput of poseforge ViTPose-B against Hugging Face transformers' VitPose-B at 256x192,
measured in the same run on the same machine, dtype and weights (the HF model's random weights are
converted into poseforge, and both outputs are checked to agree before timing).

* CPU: batch 8, fp32. HF is timed as built (eager attention) and with SDPA in its backbone.
* CUDA (if a GPU is present): batch 256, pure bf16 weights, eager and ``torch.compile`` for both.

Throughput is the median over repeats of images / second; timings of the two models are interleaved
so that machine load affects both alike. The printed ratios are poseforge / HF eager.

    PYTHONPATH=. python benchmarks/vitpose_forward.py [--cpu-batch 8] [--cuda-batch 256] [--repeats 7]
"""
from __future__ import annotations

import argparse
import copy
import datetime
from typing import Callable

import torch

from poseforge.convert import vitpose_from_state_dict

from _common import cpu_name, race  # benchmarks/_common.py (the script's folder is on sys.path)


def build_models(classic: bool = True):
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(0)
    backbone = VitPoseBackboneConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     image_size=[256, 192], out_indices=[12], layer_norm_eps=1e-6)
    hf = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, use_simple_decoder=not classic,
                                               num_labels=17)).eval()
    pf = vitpose_from_state_dict(hf.state_dict(), "hf", hf_config=hf.config.to_dict()).eval()
    # HF builds VitPose with eager attention; its backbone also accepts SDPA, timed as a second reference.
    hf_sdpa = copy.deepcopy(hf)
    hf_sdpa.backbone.set_attn_implementation("sdpa")
    return hf, hf_sdpa, pf




def report(title: str, results: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    for name, ips in results.items():
        print(f"  {name:<34s} {ips:10.1f} img/s   ratio vs {reference}: {ips / results[reference]:5.2f}x")


def cpu_section(hf, hf_sdpa, pf, batch: int, repeats: int) -> None:
    x = torch.randn(batch, 3, 256, 192)
    with torch.inference_mode():
        diff = (hf(x).heatmaps - pf(x).heatmaps).abs().max().item()
        results = race({"HF transformers VitPose-B (eager)": lambda: hf(x).heatmaps,
                        "HF transformers VitPose-B (sdpa)": lambda: hf_sdpa(x).heatmaps,
                        "poseforge vitpose-b": lambda: pf(x).heatmaps},
                       batch, repeats, warmup=2, sync=lambda: None)
    print(f"(outputs agree: max abs diff {diff:.2e})")
    report(f"CPU fp32, batch {batch}, 256x192, {torch.get_num_threads()} threads, median of {repeats}",
           results, "HF transformers VitPose-B (eager)")


def cuda_section(hf, hf_sdpa, pf, batch: int, repeats: int, compile_models: bool) -> None:
    device = torch.device("cuda")
    hf = hf.to(device, torch.bfloat16)
    hf_sdpa = hf_sdpa.to(device, torch.bfloat16)
    pf = pf.to(device).prepare_for_inference(dtype=torch.bfloat16, channels_last=True)
    x = torch.randn(batch, 3, 256, 192, device=device, dtype=torch.bfloat16)
    runners: dict[str, Callable[[], torch.Tensor]] = {
        "HF transformers VitPose-B (eager)": lambda: hf(x).heatmaps,
        "HF transformers VitPose-B (sdpa)": lambda: hf_sdpa(x).heatmaps,
        "poseforge vitpose-b (eager)": lambda: pf(x).heatmaps,
    }
    if compile_models:
        hf_compiled = torch.compile(hf)
        pf_compiled = torch.compile(pf, fullgraph=True)
        runners["HF transformers VitPose-B (compile)"] = lambda: hf_compiled(x).heatmaps
        runners["poseforge vitpose-b (compile)"] = lambda: pf_compiled(x).heatmaps
    with torch.inference_mode():
        ref = hf(x).heatmaps.float()
        diff = (pf(x).heatmaps.float() - ref).abs().max().item()
        results = race(runners, batch, repeats, warmup=5, sync=torch.cuda.synchronize)
    print(f"\n(bf16 outputs: max abs diff {diff:.3f} on heatmaps of max {ref.abs().max().item():.3f})")
    report(f"CUDA {torch.cuda.get_device_name()} pure bf16, batch {batch}, 256x192, median of {repeats}",
           results, "HF transformers VitPose-B (eager)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-batch", type=int, default=8)
    parser.add_argument("--cuda-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cuda-repeats", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs on CUDA")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()

    import transformers

    print(f"vitpose_forward benchmark, {datetime.date.today()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {cpu_name()}")
    hf, hf_sdpa, pf = build_models()
    if not args.skip_cpu:
        cpu_section(hf, hf_sdpa, pf, args.cpu_batch, args.repeats)
    if torch.cuda.is_available():
        cuda_section(hf, hf_sdpa, pf, args.cuda_batch, args.cuda_repeats, not args.no_compile)
    else:
        print("\nCUDA: no GPU available, CUDA section skipped")


if __name__ == "__main__":
    main()
