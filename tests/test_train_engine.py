"""The training engine on tiny CPU runs: outputs, exact resume, accumulation == larger batch, clipping."""
from __future__ import annotations

import json

import pytest
import torch

from poseforge.errors import PoseforgeError
from poseforge.models import load_model
from poseforge.train import Trainer, load_config
from poseforge.train.checkpoint import load_checkpoint

# A run of seconds: 32 cached synthetic 48x64 images, batch 8 -> 4 steps per epoch, 4 held-out images.
# The tiny heatmap model the smoke preset had: no BatchNorm (batch statistics would differ per process
# and micro-batch) and fast.
TINY_MODEL = "model.overrides={input_size: [48, 64], head: simple}"
TINY = [TINY_MODEL, "data.synthetic.train_images=32", "data.synthetic.val_images=4",
        "data.synthetic.image_size=[48,64]", "data.batch_size=8", "data.val_batch_size=4", "schedule.epochs=2",
        "schedule.warmup_iters=2", "val_interval=1", "log_interval=1", "threads=1"]


def tiny_config(*sets: str):
    return load_config("smoke", TINY + list(sets))


def train_losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def val_records(run_dir) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "val"]


def test_run_folder_contents(tmp_path):
    run = tmp_path / "run"
    summary = Trainer(tiny_config(), run, progress=False).fit()
    assert summary["steps"] == 8 and summary["epochs"] == 2 and not summary["stopped_early"]
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "last.pt", "best.pt", "best/model.safetensors",
                 "best/config.json", "best/training.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*"))  # no temp files or half-swapped folders left behind
    vals = val_records(run)
    assert [v["epoch"] for v in vals] == [1, 2] and all(0.0 <= v["AP"] <= 1.0 for v in vals)
    assert summary["best_metric"] == "AP" and summary["best_score"] == max(v["AP"] for v in vals)
    # time spent building the model and rendering the data is reported apart from the training loop's
    assert 0 < summary["setup_seconds"] == load_checkpoint(run / "last.pt")["setup_seconds"]
    best = load_model(run / "best")
    state = load_checkpoint(run / "best.pt")
    assert all(torch.equal(best.state_dict()[k], v) for k, v in state["model"].items())
    assert load_config(run / "config.yaml") == tiny_config()
    with pytest.raises(PoseforgeError, match="already holds a training run"):
        Trainer(tiny_config(), run, progress=False)


def _final_state(run_dir):
    state = load_checkpoint(run_dir / "last.pt")
    return state["model"], state["ema"]["module"] if state["ema"] else None, state["optimizer"]


@pytest.mark.parametrize("stop_at", [3, 4])  # mid-epoch, and at the epoch boundary (after validation)
def test_resume_is_exact(tmp_path, stop_at):
    # drop path draws from the global RNG and EMA keeps state: both must be restored exactly
    sets = ["model.overrides.drop_path_rate=0.2", "ema.momentum=0.01", "ema.gamma=4"]
    full = tmp_path / "full"
    Trainer(tiny_config(*sets), full, progress=False).fit()
    part = tmp_path / "part"
    summary = Trainer(tiny_config(*sets, f"max_steps={stop_at}"), part, progress=False).fit()
    assert summary["stopped_early"] and summary["steps"] == stop_at
    assert load_checkpoint(part / "last.pt")["step"] == stop_at
    first_setup = load_checkpoint(part / "last.pt")["setup_seconds"]
    resumed = Trainer(tiny_config(*sets), part, resume=True, progress=False).fit()
    assert resumed["setup_seconds"] > first_setup  # both sessions' set-up counted
    assert train_losses(part) == train_losses(full)  # bitwise: floats compared exactly
    assert len(train_losses(full)) == 8
    model_a, ema_a, opt_a = _final_state(full)
    model_b, ema_b, opt_b = _final_state(part)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert all(torch.equal(s["exp_avg_sq"], opt_b["state"][i]["exp_avg_sq"]) for i, s in opt_a["state"].items())
    assert [v["AP"] for v in val_records(part)] == [v["AP"] for v in val_records(full)]


@pytest.mark.slow
def test_resume_is_exact_with_workers_and_fresh_images(tmp_path):
    sets = ["data.num_workers=2", "data.synthetic.fresh=true", "model.overrides.drop_path_rate=0.2"]
    full = tmp_path / "full"
    Trainer(tiny_config(*sets), full, progress=False).fit()
    part = tmp_path / "part"
    Trainer(tiny_config(*sets, "max_steps=3"), part, progress=False).fit()
    Trainer(tiny_config(*sets), part, resume=True, progress=False).fit()
    assert train_losses(part) == train_losses(full)
    model_a, _, _ = _final_state(full)
    model_b, _, _ = _final_state(part)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)


def test_accumulation_equals_the_larger_batch(tmp_path):
    # The smoke model has the simple head: no BatchNorm, so a micro-batch's statistics do not matter.
    common = ["val_interval=0", "schedule.epochs=1", "optim.clip_grad=0.01", "data.synthetic.train_images=64"]
    big = Trainer(tiny_config(*common, "data.batch_size=16"), tmp_path / "big", progress=False)
    big.fit()
    accum = Trainer(tiny_config(*common, "data.batch_size=8", "optim.accumulate=2"), tmp_path / "accum", progress=False)
    accum.fit()
    assert big.step == accum.step == 4
    a, b = big.estimator.state_dict(), accum.estimator.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-5) for k in a)
    la, lb = train_losses(tmp_path / "big"), train_losses(tmp_path / "accum")
    assert la.keys() == lb.keys() and all(la[k] == pytest.approx(lb[k], rel=1e-5) for k in la)
    single = Trainer(tiny_config(*common, "data.batch_size=8"), tmp_path / "single", progress=False)
    single.fit()
    assert single.step == 8  # without accumulation the same data makes twice the steps


def test_gradients_are_clipped_before_the_step(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config("val_interval=0", "max_steps=2", "optim.clip_grad=1e-4"), tmp_path / "clip", progress=False)
    norms = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", recording_step)
    trainer.fit()
    logged = [r["grad_norm"] for r in map(json.loads, (tmp_path / "clip/metrics.jsonl").read_text().splitlines())]
    assert len(norms) == 2 and all(n <= 1e-4 * (1 + 1e-4) for n in norms)
    assert all(g > 1e-4 for g in logged)  # the logged norm is the one before clipping


def test_validation_uses_the_ema_model(tmp_path):
    trainer = Trainer(tiny_config("ema.momentum=0.5", "max_steps=1"), tmp_path / "ema", progress=False)
    trainer.fit()
    with torch.no_grad():
        for p in trainer.ema.module.parameters():
            p.zero_()  # an EMA model of zeros predicts nothing: AP 0 if validation uses it
    assert trainer.validate()["AP"] == 0.0


def test_channels_last_changes_the_layout_not_the_training(tmp_path):
    # The conv stem with BatchNorm, as synth-cpu trains it; NHWC against NCHW differs only by rounding.
    conv_stem = "model.overrides={input_size: [48, 64], stem: conv, stem_depth: 2, head: simcc}"
    common = [conv_stem, "val_interval=0", "schedule.epochs=1"]
    nhwc = Trainer(tiny_config(*common), tmp_path / "nhwc", progress=False)
    nchw = Trainer(tiny_config(*common, "channels_last=false"), tmp_path / "nchw", progress=False)
    stem_conv = "backbone.patch_embed.stem.0.weight"
    assert nhwc.estimator.get_parameter(stem_conv).is_contiguous(memory_format=torch.channels_last)
    assert not nchw.estimator.get_parameter(stem_conv).is_contiguous(memory_format=torch.channels_last)
    nhwc.fit()
    nchw.fit()
    la, lb = train_losses(tmp_path / "nhwc"), train_losses(tmp_path / "nchw")
    # (the weights drift by more than rounding: Adam rescales the tiny gradient differences to lr-sized steps)
    assert la.keys() == lb.keys() and all(la[k] == pytest.approx(lb[k], rel=1e-4) for k in la)
    # NHWC weights save as plain safetensors (as the export does) that predict as the trainer's model
    shipped = load_model(nhwc.estimator.save_pretrained(tmp_path / "shipped"))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(shipped.eval()(x).simcc_x, nhwc.estimator.eval()(x).simcc_x, atol=1e-5)


def test_compile_falls_back_to_eager_where_the_backend_fails(tmp_path, monkeypatch, caplog):
    import poseforge.train.compiling as compiling

    def no_compiler(module):
        def compiled(*args, **kwargs):
            missing = RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
            raise torch._inductor.exc.InductorError(missing, None)
        return compiled

    monkeypatch.setattr(compiling.torch, "compile", no_compiler)
    eager = Trainer(tiny_config("val_interval=0", "max_steps=3"), tmp_path / "eager", progress=False)
    eager.fit()
    with caplog.at_level("WARNING", logger="poseforge"):
        fallback = Trainer(tiny_config("val_interval=0", "max_steps=3", "compile=true"), tmp_path / "fallback",
                           progress=False)
        fallback.fit()
    assert not fallback.forward_model.is_compiled
    assert sum("torch.compile failed" in r.message and "C++ compiler" in r.message for r in caplog.records) == 1
    assert train_losses(tmp_path / "fallback") == train_losses(tmp_path / "eager")  # trained as eager, not skipped


def test_compile_does_not_hide_model_errors():
    from poseforge.train.compiling import CompiledForward

    forward = CompiledForward(torch.nn.Linear(4, 2))
    with pytest.raises(RuntimeError, match="same reduction dim|cannot be multiplied"):
        forward(torch.randn(3, 5))  # a shape error of the model is raised, not taken for a compiler failure
    assert forward.is_compiled  # (tracing fails before any C++ compilation: no compiler needed here)


def test_a_tied_score_keeps_the_later_epoch(tmp_path):
    """Untrained-level runs score AP 0 every epoch: best/ must hold the most trained model, not the first."""
    run = tmp_path / "run"
    summary = Trainer(tiny_config("schedule.epochs=3"), run, progress=False).fit()
    scores = [r["AP"] for r in val_records(run)]
    assert scores == [0.0, 0.0, 0.0]  # a tie on every epoch (a tiny model after a few steps)
    assert summary["best_epoch"] == 3
    last = load_checkpoint(run / "last.pt")["model"]
    best = load_model(run).state_dict()
    assert all(torch.equal(best[k].float(), v.float()) for k, v in last.items() if k in best)


def _count_worker_starts(monkeypatch, tmp_path):
    """Patch the DataLoader's worker_init_fn to append each worker's pid to a file (workers fork: they see the patch)."""
    import os

    from poseforge.train import data as train_data

    log = tmp_path / "worker_pids.txt"
    original = train_data.worker_init

    def recording(worker_id: int) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        original(worker_id)

    monkeypatch.setattr(train_data, "worker_init", recording)
    return lambda: log.read_text().split() if log.exists() else []


def test_loader_workers_live_from_epoch_to_epoch_and_end_with_the_run(tmp_path, monkeypatch):
    import multiprocessing

    pids = _count_worker_starts(monkeypatch, tmp_path)
    sets = ["data.num_workers=1", "schedule.epochs=3", "val_interval=0"]
    Trainer(tiny_config(*sets), tmp_path / "full", progress=False).fit()
    assert len(pids()) == 1  # one worker for three epochs (it used to start anew every epoch)
    assert not multiprocessing.active_children()
    # An augmentation stage switch starts the next stage's worker (it copies that stage's transforms).
    stage2 = ["data.stage2_epochs=1", "data.augment_stage2={rotate_factor: 0.0, scale_prob: 0.0, flip_prob: 0.0}"]
    Trainer(tiny_config(*sets, *stage2), tmp_path / "stages", progress=False).fit()
    assert len(pids()) == 3 and not multiprocessing.active_children()
    # Stopped mid-epoch: the worker exits with the run, and the resumed run trains the same steps.
    Trainer(tiny_config(*sets, "max_steps=6"), tmp_path / "part", progress=False).fit()
    assert not multiprocessing.active_children()
    Trainer(tiny_config(*sets), tmp_path / "part", resume=True, progress=False).fit()
    assert train_losses(tmp_path / "part") == train_losses(tmp_path / "full")
    assert not multiprocessing.active_children()
