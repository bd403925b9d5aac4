"""torchrun with 2 CPU processes (gloo) trains like one process with the same global batch.

The smoke model has the simple decoder (no BatchNorm), so per-process batch statistics cannot make
the runs differ (SyncBatchNorm, which the classic head would need, runs on CUDA only). Both runs see
the same samples with the same augmentation (keys by global position), DDP averages the gradients
of the two halves, and validation is split over the processes and gathered.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poseforge.train import Trainer
from poseforge.train.checkpoint import load_checkpoint

from test_train_engine import TINY, tiny_config, train_losses, val_records

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["schedule.epochs=1", "data.synthetic.train_images=64", "data.synthetic.val_images=6", "val_interval=1"]


def torchrun(out: Path, sets: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "poseforge.cli", "train", "--config", "smoke", "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def _compare(single_dir: Path, dist_dir: Path, atol: float) -> None:
    a = load_checkpoint(single_dir / "last.pt")
    b = load_checkpoint(dist_dir / "last.pt")
    assert a["step"] == b["step"] == 4 and b["world_size"] == 2
    worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert worst < atol, worst
    la, lb = train_losses(single_dir), train_losses(dist_dir)
    assert la.keys() == lb.keys() and all(la[k] == pytest.approx(lb[k], rel=1e-5) for k in la)
    va, vb = val_records(single_dir), val_records(dist_dir)
    assert [v["epoch"] for v in vb] == [1]
    assert vb[0]["AP"] == pytest.approx(va[0]["AP"], abs=1e-6)


def test_ddp_two_processes_equal_one_process(tmp_path):
    single = tmp_path / "single"
    Trainer(tiny_config(*COMMON, "data.batch_size=16"), single, progress=False).fit()
    out = tmp_path / "ddp"
    result = torchrun(out, TINY + COMMON + ["data.batch_size=8", "distributed=ddp"])
    assert result.returncode == 0, result.stderr[-3000:]
    _compare(single, out, atol=1e-5)
    assert (out / "best" / "model.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_two_processes_equal_one_process(tmp_path):
    single = tmp_path / "single"
    Trainer(tiny_config(*COMMON, "data.batch_size=16"), single, progress=False).fit()
    out = tmp_path / "fsdp"
    result = torchrun(out, TINY + COMMON + ["data.batch_size=8", "distributed=fsdp"])
    assert result.returncode == 0, result.stderr[-3000:]
    _compare(single, out, atol=1e-5)
