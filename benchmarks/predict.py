"""End-to-end pose prediction speed on a 640x480 video of two people, against a naive loop in the same run.

Pipeline measured (``Predictor.predict_video`` with tracking): decode the frame (PyAV), detect people
(bundled detector), cut every crop of the frame in one ``crop_batch`` call on the device, run the
pose model on all crops at once (flip test), decode the heatmaps and map the keypoints back, track.
The share of each stage comes from ``Predictor(profile=True)`` timings (CUDA synchronized per stage).
Last, the pose model alone on 2 and 16 crops in the Predictor's NHWC weights against NCHW ones.

Reference (same frames, same detector, same model, same flip test): the naive per-person loop of
many demo scripts - for each detected box, cut the crop with ``cv2.warpAffine``, run the model on
that one crop, map its keypoints back with numpy. The ratio is what batching the people of a frame
(one crop call, one model call, one decode) buys.

Frames/s are medians over repeats; the machine load is printed before and after because the CPU is
shared. A CUDA section (fp32 and bf16 autocast) runs when a GPU is present.

    PYTHONPATH=. python benchmarks/predict.py [--frames 30] [--repeats 5] [--no-flip] [--detector bundled|PATH.onnx]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the poseforge commands do (see poseforge.cli.predict)

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from poseforge.data.transforms import bbox_xywh_to_center_scale, crop_image, get_affine_matrix
from poseforge.inference.detectors.base import xyxy_to_xywh
from poseforge.inference.predictor import Predictor
from poseforge.inference.synthetic_video import crossing_clip
from poseforge.inference.tracking import PoseTracker
from poseforge.inference.video import VideoReader, VideoWriter

from _common import cpu_name, load_average, race  # benchmarks/_common.py (the script's folder is on sys.path)



def end_to_end(predictor: Predictor, video: Path) -> tuple[float, dict[str, float], int]:
    """frames/s of predict_video over the file, stage seconds, poses found."""
    predictor.reset_timings()
    tracker = PoseTracker(predictor.keypoint_set)
    start = time.perf_counter()
    frames = poses = 0
    for result in predictor.predict_video(video, tracker=tracker, keep_image=False):
        frames += 1
        poses += len(result)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return frames / seconds, dict(predictor.timings, total=seconds), poses


def naive(predictor: Predictor, video: Path, max_frames: int | None = None) -> float:
    """frames/s of the per-person loop (video decode, cv2 crop, one model call per person, numpy mapping back)."""
    model, detector = predictor.model, predictor.detector
    w, h = predictor.input_size
    start = time.perf_counter()
    count = 0
    for decoded in VideoReader(video):
        if max_frames is not None and count >= max_frames:
            break
        frame = decoded.image
        count += 1
        given = torch.from_numpy(frame).to(predictor.device).permute(2, 0, 1) if detector.input_kind == "tensor" else frame
        dets = detector.detect_batch([given])[0]
        for box in xyxy_to_xywh(dets.boxes.double().cpu()).numpy():
            center, scale = bbox_xywh_to_center_scale(box, w / h, 1.25)
            matrix = get_affine_matrix(center, scale, 0.0, (w, h), predictor.model.codec.udp_warp)
            crop = crop_image(frame, matrix, (w, h))
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(predictor.device)
            with predictor._autocast():
                pred = model.predict(x, flip_test=predictor.flip_test)
            kp = pred.keypoints[0, 0].float().cpu().numpy().astype(np.float64)
            full = np.vstack([matrix, [0.0, 0.0, 1.0]])
            back = np.linalg.inv(full)[:2]
            _ = kp @ back[:, :2].T + back[:, 2]
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def section(title: str, predictor: Predictor, video: Path, num_frames: int, repeats: int) -> None:
    print(f"\n== {title}: {predictor!r}")
    end_to_end(predictor, video)  # warm-up (allocator, kernels, caches)
    naive(predictor, video, 3)
    runs, stages, poses = [], [], 0
    refs = []
    for _ in range(repeats):
        fps, timing, poses = end_to_end(predictor, video)
        runs.append(fps)
        stages.append(timing)
        refs.append(naive(predictor, video))
    fps, ref = statistics.median(runs), statistics.median(refs)
    median_stage = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    total = median_stage["total"]
    other = total - sum(median_stage[k] for k in ("detect", "crop", "model", "decode"))
    shares = ", ".join(f"{k} {100 * median_stage[k] / total:.0f}%" for k in ("detect", "crop", "model", "decode"))
    print(f"frames: {num_frames} (640x480, 2 people), poses found per run: {poses}")
    print(f"end-to-end (video decode + detect + crop + pose + decode + track): {fps:.2f} frames/s "
          f"(median of {repeats}: {', '.join(f'{r:.2f}' for r in runs)})")
    print(f"  time shares: {shares}, video decode + tracking + rest {100 * other / total:.0f}%")
    print("  per frame: " + ", ".join(f"{k} {1000 * median_stage[k] / num_frames:.1f} ms"
                                       for k in ("detect", "crop", "model", "decode")))
    print(f"reference, naive per-person loop (video decode, detect, cv2 crop + 1 model call per person): {ref:.2f} frames/s "
          f"(median of {repeats}: {', '.join(f'{r:.2f}' for r in refs)})")
    print(f"ratio batched / naive: {fps / ref:.2f}x")


def memory_layouts(predictor: Predictor, repeats: int) -> None:
    """The pose model alone on crops (flip test as set), in the Predictor's NHWC weights against a copy
    in NCHW weights, interleaved; 2 crops (this video's two people) and 16 crops per call."""
    nhwc = predictor.model
    nchw = copy.deepcopy(nhwc).to(memory_format=torch.contiguous_format)
    w, h = predictor.input_size
    for batch in (2, 16):
        crops = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, device=predictor.device)
        runners = {name: (lambda m=m: m.predict(crops, flip_test=predictor.flip_test)) for name, m in
                   (("NHWC", nhwc), ("NCHW", nchw))}
        with torch.inference_mode():
            speeds = race(runners, items=batch, repeats=3 * repeats, warmup=2)
        print(f"pose model on {batch:2d} crops: NHWC weights (the Predictor's) {speeds['NHWC']:.1f} crops/s, "
              f"NCHW {speeds['NCHW']:.1f} crops/s, ratio {speeds['NHWC'] / speeds['NCHW']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-flip", dest="flip", action="store_false")
    parser.add_argument("--detector", default="bundled")
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()

    print(f"poseforge predict benchmark | torch {torch.__version__} | {cpu_name()} | {os.cpu_count()} CPUs | "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} | {load_average()}")
    clip = crossing_clip(args.frames, (640, 480))
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "two_people.mp4"
        with VideoWriter(video, fps=clip.fps) as writer:
            for frame in clip.frames:
                writer.write(frame)
        cpu = Predictor(args.model, detector=args.detector, device="cpu", flip_test=args.flip, profile=True)
        section(f"CPU, flip test {'on' if args.flip else 'off'}", cpu, video, len(clip.frames), args.repeats)
        memory_layouts(cpu, args.repeats)
        if torch.cuda.is_available():
            for bf16 in (False, True):
                gpu = Predictor(args.model, detector=args.detector, device="cuda", flip_test=args.flip, bf16=bf16,
                                profile=True)
                section(f"CUDA {torch.cuda.get_device_name()} {'bf16' if bf16 else 'fp32'}", gpu, video,
                        len(clip.frames), args.repeats)
        else:
            print("\n(no CUDA device: GPU section skipped)")
    print(f"\n{load_average()}")


if __name__ == "__main__":
    main()
