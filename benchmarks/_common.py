"""Helpers shared by the benchmark scripts: machine description and interleaved median timing."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    """The 1/5/15-minute load average: the machine is shared, so every report says how busy it was."""
    try:
        return "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load avg n/a"


def timed(fn: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    """Seconds one call of ``fn`` takes, with ``sync`` (e.g. ``torch.cuda.synchronize``) on both sides."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def race(runners: dict[str, Callable[[], object]], items: int, repeats: int, warmup: int,
         sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median items/s of each runner (``items`` per call), interleaving their repeats so that a noisy
    neighbour slows every runner alike."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            times[name].append(timed(fn, sync))
    return {name: items / statistics.median(t) for name, t in times.items()}


def training_step(config: Any, batch: int | None = None) -> tuple[Callable[[], None], Any]:
    """One trainer step of a training config's model, as a closure, and the model: codec targets,
    forward (compiled as the config's ``compile`` says: the forward pass, or targets + forward + loss as
    one graph; in NHWC memory when it says ``channels_last``; with its activation-checkpointing policy),
    the config's loss, backward, gradient clipping, the trainer's AdamW update (its kernel) and, when the
    config turns it on, the EMA update, on a fixed random batch (``batch`` crops, default the config's)
    with keypoints inside the crops."""
    import torch

    from poseforge.models import create_model
    from poseforge.train import build_loss, build_optimizer
    from poseforge.train.activations import apply_activation_checkpointing
    from poseforge.train.ema import ModelEMA

    torch.manual_seed(0)
    model = create_model(config.model.name, **config.model.overrides).train()
    if config.channels_last:  # as the trainer
        model.to(memory_format=torch.channels_last)
    apply_activation_checkpointing(model, config.activation_checkpointing, "cpu")
    optimizer = build_optimizer(model, config.optim)
    loss_fn = build_loss(model.codec.name, config.loss)
    w, h = model.config.input_size
    b, k = batch or config.data.batch_size, model.keypoint_set.num_keypoints
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8)
    keypoints = torch.rand(b, k, 2) * torch.tensor([w - 1.0, h - 1.0])
    visible = torch.ones(b, k)
    clip = config.optim.clip_grad
    ema = ModelEMA(model, config.ema.momentum, config.ema.gamma) if config.ema.momentum > 0 else None
    forward = torch.compile(model) if config.compile == "model" else model  # as the trainer's forward_model

    def loss_of() -> torch.Tensor:
        targets = model.codec.encode(keypoints, visible)
        inputs = model.normalize(images)
        if config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return loss_fn(forward(inputs), targets)

    if config.compile == "step":  # as the trainer's compiled step: targets, forward and loss in one graph
        loss_of = torch.compile(loss_of)

    def step() -> None:
        loss_of().backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)

    return step, model


def run_logged(command: list[str], log: "os.PathLike[str] | str") -> float:
    """Run a command (a ``poseforge`` arm of a comparison), its output to ``log``; print it first so every number
    can be reproduced alone; exit with the log's name if it fails. Returns its wall time in seconds."""
    import shlex
    import subprocess
    import sys

    print("$ " + shlex.join(command), flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=os.environ.copy(), check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"command failed (exit {done.returncode}); see {log}")
    return seconds
