"""The training engine: one loop for every model family.

:class:`Trainer` builds the model (``create_model``), the data, AdamW with layer-wise LR decay and the
LR schedule from a :class:`~poseforge.train.config.TrainConfig`, then ``fit()`` runs epochs of
optimizer steps. It only calls the estimator protocol (:mod:`poseforge.models.estimators.base`), so
top-down, bottom-up and dense models train the same way: samples come from ``model.transform``, the
forward pass runs under bf16 autocast on CUDA (fp32 on CPU), ``model.loss(outputs, batch)`` gives the
loss (targets encoded on the device by the codec), gradients are accumulated, clipped and applied, an
optional EMA follows, and every ``val_interval`` epochs the model (the EMA one when on) is scored by
its own metric (``model.metric``: COCO AP, mIoU ...) on the validation set(s); the metric's primary
stat picks the best checkpoint.

Run folder (``run_dir``)::

    config.yaml     the full experiment config (what --resume reads back)
    metrics.jsonl   one JSON record per log interval ("train") and per validation ("val")
    curves.png      training loss and validation AP, redrawn after each validation
    last.pt         resumable state (model, optimizer, schedule, scaler, EMA, RNGs, data position)
    best.pt         the state of the best validation so far
    best/           the best model as a model folder: ``poseforge.load_model(run_dir / "best")``

Resuming (``Trainer(config, run_dir, resume=True)``) restores ``last.pt`` and continues with the exact
batches, augmentations, dropout draws and learning rates the uninterrupted run would have used.

Crash safety (a SIGKILL or power loss at any moment leaves a run that ``--resume`` finishes exactly):

* every file is written to a temp file and renamed in (:func:`~poseforge.io.atomic_path`); ``best/`` is
  swapped in as a whole (:func:`~poseforge.io.replace_directory`, ``training.json`` included);
* the commit order at an epoch end is ``best.pt``, then ``best/``, then ``last.pt``: ``last.pt`` is the
  commit record. If it says that epoch E was the best, ``best.pt`` and ``best/`` of epoch E were complete
  before it was written. A crash before ``last.pt`` leaves the previous ``last.pt``: the resumed run
  replays the epoch, improves at the same epoch (it is deterministic) and rewrites the best files with
  the same content. So ``best.pt``/``best/`` may be ahead of ``last.pt`` until then, never behind it;
* on start and resume the run folder is tidied: a half-done ``best/`` swap is finished or rolled back
  (:func:`~poseforge.io.recover_directory`) and poseforge's own stale temp files (``.<name>.XXXXXXXX.tmp``
  / ``.part``) are deleted; a run folder written by the earlier order (``last.pt`` first), killed before
  its best files, gets them rebuilt from ``last.pt`` (which then holds exactly that state);
* SIGINT / SIGTERM during :meth:`Trainer.fit` finish the current optimizer step (or the epoch end being
  written), save ``last.pt`` at that step with its exact data position (epoch, batches done in it: the
  engine resumes mid-epoch) and raise :class:`TrainingInterrupted` (a one-line error); ``--resume`` then
  continues exactly, running the epoch's validation first if the signal came after its last step. A
  second signal aborts at once (``KeyboardInterrupt``; the temp files it may leave are cleaned on resume).
  Train records are logged per ``log_interval`` window: a resumed run's first window is shorter, so only
  with ``log_interval=1`` (or a stop on a window boundary) is metrics.jsonl identical as well.

Extension points: ``data.sources`` trains a multi-task model on a ratio-mixed set of datasets (each
sample carries its dataset index, which the model takes as its task; validation reports the stats per
dataset and their mean); ``data.unlabeled`` mixes images a teacher pseudo-labelled before the run
(:mod:`poseforge.train.pseudo`, the labels file kept in the run folder) into a single-task model's data;
``setup_model`` may adapt or replace the freshly built model before the optimizer sees it (load partial
weights, freeze parameters) and ``extra_loss`` adds a term to every step's loss (distillation from a
teacher; see :mod:`poseforge.train.distill` and :mod:`poseforge.train.dwpose`).
An ``extra_loss`` with ``set_epoch(epoch, epochs)`` is told the 0-based epoch before each epoch's steps (a
loss weight that decays over the run), and its ``last_parts`` (named scalars of its latest call) are
logged as ``loss_<name>``. ``auxiliary`` is a module trained together with the model but not part of it
(DWPose's feature-alignment convolution): its parameters join the optimizer and the gradient clipping, its
state is saved in ``last.pt`` / ``best.pt`` and restored on resume, and it never reaches ``best/``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..device import resolve_device
from ..errors import PoseforgeError
from ..evaluation.coco import format_table
from ..evaluation.evaluator import evaluate
from ..io import clean_stale_temp_files, recover_directory, replace_directory, write_bytes_atomic
from .activations import apply_activation_checkpointing
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .compiling import CompiledForward
from .config import TrainConfig, config_to_dict, save_config
from .curves import write_curves
from .data import (ResumableBatchSampler, TrainSamples, ValidationSet, build_mixed_source, build_self_training_source,
                   build_train_source, build_val_sets, gpu_batch, jpeg_decoder, make_loader, sample_seed)
from .distributed import (DistInfo, all_reduce_mean, barrier, choose_strategy, init_distributed, wrap_model)
from .ema import ModelEMA
from .init import init_backbone, init_position_embeddings
from .optim import LRSchedule, build_optimizer
from .pseudo import prepare_pseudo_labels

__all__ = ["Trainer", "TrainingInterrupted", "format_task_table", "TASK_COLUMNS"]

log = logging.getLogger("poseforge")

# Stats averaged over the validation sets of a mix (and the per-dataset table's columns).
TASK_COLUMNS = ("AP", "AP50", "AP75", "AR", "PCK@0.2", "EPE", "mIoU", "AbsRel", "normal_mean")


class TrainingInterrupted(PoseforgeError):
    """SIGINT / SIGTERM stopped :meth:`Trainer.fit` after saving a resumable ``last.pt`` (one-line message)."""

    exit_code = 130  # the shell's code for a run stopped by a signal


class Trainer:
    """Train a model as ``config`` describes, writing into ``run_dir``.

    Args:
        config: the experiment.
        run_dir: output folder (created).
        resume: continue from ``run_dir/last.pt``.
        progress: show a progress bar (default: when stderr is a terminal, on the main process).
        setup_model: called with the built (and ``model.init``-loaded) model before it moves to the device
            and the optimizer is made; may modify it in place or return a replacement.
        extra_loss: ``(batch, normalized images, float outputs) -> scalar`` added to every micro-batch's loss;
            optional ``set_epoch(epoch, epochs)`` (called before each epoch) and ``last_parts`` (logged terms).
        auxiliary: a module trained with the model but saved apart from it (see the module doc); it may be
            built by ``setup_model``, since the Trainer reads its parameters only after that hook.
    """

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
                 progress: bool | None = None, *, setup_model: Callable[[nn.Module], nn.Module | None] | None = None,
                 extra_loss: Callable[[Batch, Tensor, Any], Tensor] | None = None,
                 auxiliary: nn.Module | None = None) -> None:
        from ..models import create_model, load_model

        setup_start = time.perf_counter()
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if not self.dist.is_main:  # one process reports
            log.setLevel(logging.WARNING)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and self.dist.is_main
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None,
                          "auto": torch.bfloat16 if self.device.type == "cuda" else None}[config.amp]
        if self.amp_dtype is not None and self.device.type != "cuda":
            raise PoseforgeError(f"amp={config.amp} needs CUDA; use amp=off (or auto) on {self.device}")

        if not resume and (self.run_dir / "last.pt").exists():  # (before any labelling or rendering)
            raise PoseforgeError(f"{self.run_dir} already holds a training run (last.pt); resume it or use another folder")
        if config.data.unlabeled.images is not None:  # self-training: the teacher labels the images first (train/pseudo.py)
            config = self.config = prepare_pseudo_labels(config, self.run_dir, resume=resume, device=self.device,
                                                         label=self.dist.is_main)
            barrier()  # the other processes wait for the labels file

        # ----- model (seeded: the same seed gives the same initial weights)
        torch.manual_seed(config.seed)
        model = create_model(config.model.name, **config.model.overrides)
        if config.model.init:
            init = load_model(config.model.init)
            model.load_weights(init.state_dict(), source=str(config.model.init))
        else:
            init_position_embeddings(model, config.model.pos_embed_init)
        if config.model.backbone_init:  # e.g. the encoder of an MAE pretraining run
            init_backbone(model, config.model.backbone_init)
        if setup_model is not None:
            model = setup_model(model) or model
        self.extra_loss = extra_loss
        self.auxiliary = auxiliary.to(self.device).train() if auxiliary is not None else None
        self.estimator = model.to(self.device)
        if config.channels_last:  # 4-D tensors only: convolution weights
            self.estimator.to(memory_format=torch.channels_last)
        model.configure_loss(config.loss)
        # before DDP / FSDP wrap the blocks (poseforge.train.activations)
        self.checkpoint_every = apply_activation_checkpointing(model, config.activation_checkpointing, self.device)

        # ----- data
        data = config.data
        micro_per_step = config.optim.accumulate
        global_batch = data.batch_size * self.dist.world_size
        mixed = bool(data.sources)
        self_training = data.unlabeled.images is not None  # a single-task mix: training data + pseudo-labels
        fresh_synthetic = data.train.lower() == "synthetic" and data.synthetic.fresh and not (mixed or self_training)
        if mixed or self_training:
            self.source = build_mixed_source(config, model) if mixed else build_self_training_source(config, model)
            per_epoch = len(self.source) // (global_batch * micro_per_step)
        elif fresh_synthetic:  # rendered on the fly: built below, once its length is known
            per_epoch = data.synthetic.train_images // (global_batch * micro_per_step)
        else:  # a COCO-format dataset, or synthetic images rendered once and kept in memory
            self.source = build_train_source(data, model)
            per_epoch = len(self.source) // (global_batch * micro_per_step)
        self.steps_per_epoch = config.schedule.steps_per_epoch or per_epoch
        if self.steps_per_epoch < 1:
            raise PoseforgeError(f"fewer training samples than one optimizer step needs "
                                 f"({global_batch} x {micro_per_step} accumulation)")
        self.batches_per_epoch = self.steps_per_epoch * micro_per_step
        self.total_steps = self.steps_per_epoch * config.schedule.epochs
        # one transform per source: each source's samples are cut for its own task
        tasks = self.source.tasks if mixed or self_training else [0]

        def per_source(augment: Any) -> list[Any]:  # (sources of one task share its transform)
            by_task = {t: model.transform(True, augment, task=t) for t in sorted(set(tasks))}
            return [by_task[t] for t in tasks]

        transforms = per_source(data.augment)
        # mmpose's PipelineSwitchHook: the last stage2_epochs train with the stage-2 augmentation
        self.stage_transforms = [transforms]
        if data.stage2_epochs:
            self.stage_transforms.append(per_source(data.augment_stage2))
        self.transform = transforms[0]
        self.gpu_augment = (data.gpu_augment and self.device.type == "cuda" and not mixed
                            and hasattr(self.transform, "apply_batch"))
        fresh = fresh_synthetic or mixed or self_training  # a mix walks on through its sources
        if fresh_synthetic:
            total_images = self.batches_per_epoch * global_batch * config.schedule.epochs
            render_here = self.gpu_augment and model.needs_boxes
            self.source = build_train_source(data, model, total_images, device=self.device if render_here else "cpu")
        self.render_on_device = fresh_synthetic and self.gpu_augment and getattr(self.source, "per_instance", False)
        self.sampler = ResumableBatchSampler(len(self.source), data.batch_size, config.seed, shuffle=True,
                                             rank=self.dist.rank, world_size=self.dist.world_size, fresh=fresh,
                                             batches_per_epoch=self.batches_per_epoch)
        # JPEG files decoded on the GPU, a batch per nvJPEG call, where torchvision is installed (train/data.py)
        raw = self.gpu_augment and not fresh_synthetic  # (a fresh synthetic stream is rendered ready to train on)
        self.jpeg_decode = jpeg_decoder(self.device, data.decode) if raw or data.decode == "nvjpeg" else None
        self.samples = TrainSamples(self.source, transforms, config.seed, raw=raw, encoded=raw and self.jpeg_decode is not None)
        self._loader: "tuple[int, torch.utils.data.DataLoader] | None" = None  # (augmentation stage, its loader)
        self.val_sets: list[ValidationSet] = build_val_sets(config, model) if config.val_interval > 0 else []

        # ----- optimization
        lr = config.optim.lr
        if config.optim.auto_scale_lr:
            lr = lr * global_batch * micro_per_step / config.optim.base_batch_size
        self.strategy = choose_strategy(self.estimator, config.distributed) if self.dist.enabled else "none"
        if self.strategy == "fsdp" and config.ema.momentum > 0:
            raise PoseforgeError("EMA is not supported together with FSDP; set ema.momentum=0 or distributed=ddp")
        if self.strategy == "fsdp" and self.auxiliary is not None:
            raise PoseforgeError("an auxiliary module (e.g. DWPose distillation) is not supported with FSDP; set distributed=ddp")
        self.model: nn.Module = wrap_model(self.estimator, self.strategy, self.dist, self.device, config.sync_bn)
        if self.strategy == "ddp":
            self.estimator = self.model.module  # SyncBatchNorm conversion may have replaced modules
        self.optimizer = build_optimizer(self.estimator, config.optim, lr)
        self.auxiliary_params = [p for p in self.auxiliary.parameters() if p.requires_grad] if self.auxiliary is not None else []
        for group in _auxiliary_groups(self.auxiliary_params, lr, config.optim.weight_decay):
            self.optimizer.add_param_group(group)
        self.schedule = LRSchedule(self.optimizer, config.schedule, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.estimator, config.ema.momentum, config.ema.gamma) if config.ema.momentum > 0 else None
        # compile="model": the forward pass; "step": forward + targets + loss (poseforge.train.compiling)
        self.forward_model = CompiledForward(self.model) if config.compile == "model" else self.model
        self._loss_of = CompiledForward(self._model_loss) if config.compile == "step" else self._model_loss

        # ----- counters
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_score = math.nan  # the validation metric's primary stat at its best so far
        self.best_metric: str | None = None
        self.best_epoch = -1
        self.elapsed = 0.0  # training seconds before this process (resumed runs)
        self.setup_seconds = 0.0  # seconds spent building model and data (rendering a cached set), all sessions
        self._fit_start: float | None = None
        self.last_stats: dict[str, float] = {}
        # seconds the training loop waited for its next batch (loading, or cropping on the GPU), this process
        self.data_seconds = 0.0
        self.stopped_early = False
        self._signal: int | None = None  # the first SIGINT / SIGTERM received during fit()

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._tidy_run_dir()
        barrier()
        if resume:
            self._resume()
        elif self.dist.is_main:
            save_config(config, self.run_dir / "config.yaml")
            if self.metrics_path.exists():
                self.metrics_path.unlink()
        self.setup_seconds += time.perf_counter() - setup_start
        log.info(f"{config.name}: {model.config.name} ({model.num_parameters() / 1e6:.2f}M parameters) on {self.device}"
                 f"{f' x {self.dist.world_size} processes ({self.strategy})' if self.dist.enabled else ''}; "
                 f"{self.source.name}: {self.steps_per_epoch} steps/epoch x {config.schedule.epochs} epochs, "
                 f"batch {data.batch_size} x {self.dist.world_size} x {micro_per_step}")

    # ------------------------------------------------------------------------------------------ paths
    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train to the end of the schedule (or ``max_steps``); returns a summary dict.

        Raises :class:`TrainingInterrupted` after SIGINT / SIGTERM, with ``last.pt`` saved (module doc)."""
        config = self.config
        self._fit_start = time.perf_counter()
        stop = self._stop_reached()
        self.model.train()
        with self._signals_saved(), self._workers_end_with_fit():
            while self.epoch < config.schedule.epochs and not stop:
                steps = self._epoch_steps()
                try:
                    for _ in steps:
                        if self._stop_reached() or self._signal is not None:
                            stop = True
                            break
                finally:
                    steps.close()  # an interrupted epoch shuts the DataLoader workers down now
                if self.batch_in_epoch >= self.batches_per_epoch and self._signal is None:  # the epoch is complete
                    self._end_epoch()
                else:  # (interrupted after an epoch's last step: its validation runs on resume)
                    self._save("last.pt")
                if self._signal is not None:  # last.pt was just saved, at this step
                    raise TrainingInterrupted(
                        f"interrupted by {signal.Signals(self._signal).name} at step {self.step} (epoch "
                        f"{self.epoch + 1}, batch {self.batch_in_epoch}/{self.batches_per_epoch}); saved "
                        f"{self.run_dir / 'last.pt'}: continue with --resume")
        self.stopped_early = self.epoch < config.schedule.epochs
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "epochs": self.epoch,
                   "best_score": None if math.isnan(self.best_score) else self.best_score, "best_metric": self.best_metric,
                   "best_epoch": self.best_epoch,
                   "last_stats": self.last_stats, "seconds": self._elapsed(), "setup_seconds": self.setup_seconds,
                   "stopped_early": self.stopped_early}
        barrier()
        return summary

    @contextlib.contextmanager
    def _workers_end_with_fit(self) -> Iterator[None]:
        """The DataLoader workers outlive an epoch, never ``fit`` (however it ends)."""
        try:
            yield
        finally:
            self._loader = None

    @contextlib.contextmanager
    def _signals_saved(self) -> Iterator[None]:
        """Turn the first SIGINT / SIGTERM into a flag that fit() checks after each step; a second one aborts."""
        if threading.current_thread() is not threading.main_thread():  # signal handlers only install there
            yield
            return
        watched = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.getsignal(s) for s in watched}

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:
                restore()
                raise KeyboardInterrupt  # the user insists: stop now, even inside a save
            self._signal = signum
            if self.dist.is_main:
                log.warning(f"{signal.Signals(signum).name}: saving a resumable checkpoint after this step "
                            "(send it again to abort at once)")

        self._signal = None
        for s in watched:
            signal.signal(s, handler)
        try:
            yield
        finally:
            restore()

    def _elapsed(self) -> float:
        """Training seconds, earlier sessions of a resumed run included."""
        return self.elapsed + (time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0)

    def _stop_reached(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _batches(self) -> Iterator[Batch]:
        """This epoch's remaining micro-batches on the device."""
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        stage = int(bool(self.config.data.stage2_epochs) and
                    self.epoch >= self.config.schedule.epochs - self.config.data.stage2_epochs)
        self.transform = self.stage_transforms[stage][0]
        if self.render_on_device:
            for keys in self.sampler:
                raw = self.source.render_on_device([k[2] for k in keys])
                yield gpu_batch(raw, self.transform, self.device, seed=sample_seed(self.config.seed, keys[0][0], keys[0][1]))
            return
        if self._loader is None or self._loader[0] != stage:
            # Workers copy the samples (and their stage's transforms) when they start, so one loader serves
            # an augmentation stage and its workers live on from epoch to epoch (a key carries its epoch).
            self._loader = None  # the previous stage's workers exit first
            self.samples.transforms = list(self.stage_transforms[stage])
            self._loader = (stage, make_loader(self.samples, self.sampler, self.config.data.num_workers,
                                               self.device.type == "cuda", persistent=True))
        loader = self._loader[1]
        complete = False
        try:
            for batch in loader:
                if self.gpu_augment:
                    yield gpu_batch(batch, self.transform, self.device, decode=self.jpeg_decode)
                else:
                    yield batch.to(self.device, non_blocking=True)
            complete = True
        finally:
            if not complete:  # interrupted (a signal, max_steps, an error): the workers exit now
                self._loader = loader = None

    def _epoch_steps(self) -> Iterator[int]:
        """Run the epoch's optimizer steps; yields after each one."""
        set_epoch = getattr(self.extra_loss, "set_epoch", None)
        if set_epoch is not None:  # also on a resumed epoch: the checkpoint's epoch is already restored
            set_epoch(self.epoch, self.config.schedule.epochs)
        bar = self._progress_bar()
        try:
            yield from self._steps_of(self._batches(), bar)
        finally:
            if bar is not None:
                bar.close()

    def _steps_of(self, batches: Iterator[Batch], bar: "_Bar | None") -> Iterator[int]:
        config = self.config
        accumulate = config.optim.accumulate
        micro = 0
        window_loss = torch.zeros((), device=self.device)
        window_parts: dict[str, Tensor] = {}  # named terms of the loss, for the log
        window_steps, window_images, window_start = 0, 0, time.perf_counter()
        window_data = self.data_seconds
        for batch in _timed(batches, self):
            micro += 1
            last_micro = micro == accumulate
            with self._no_sync(not last_micro):
                loss, parts = self._forward_loss(batch)
                loss = loss / accumulate
                self.scaler.scale(loss).backward()
            window_loss += loss.detach()
            for name, part in parts.items():
                window_parts[name] = window_parts.get(name, 0.0) + part / accumulate
            window_images += len(batch) * self.dist.world_size
            self.batch_in_epoch += 1
            if not last_micro:
                continue
            micro = 0
            grad_norm = self._optimizer_step()
            self.step += 1
            window_steps += 1
            if bar is not None:
                bar.update(self.step)
            if self.step % config.log_interval == 0 or self.batch_in_epoch >= self.batches_per_epoch:
                mean_loss = float(all_reduce_mean(window_loss / window_steps))
                seconds = time.perf_counter() - window_start
                parts = {name: float(all_reduce_mean(part / window_steps)) for name, part in window_parts.items()}
                self._log_train(mean_loss, float(grad_norm), window_images / max(seconds, 1e-9), parts,
                                (self.data_seconds - window_data) / max(seconds, 1e-9))
                if bar is not None:
                    bar.describe(f"epoch {self.epoch + 1}/{config.schedule.epochs} loss {mean_loss:.3g}")
                window_loss.zero_()
                window_parts.clear()
                window_steps, window_images, window_start = 0, 0, time.perf_counter()
                window_data = self.data_seconds
            if config.checkpoint_steps and self.step % config.checkpoint_steps == 0 and self.batch_in_epoch < self.batches_per_epoch:
                self._save("last.pt")
            yield self.step

    def _no_sync(self, skip_sync: bool):
        if not skip_sync or not self.dist.enabled:
            return contextlib.nullcontext()
        if self.strategy == "ddp":
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2: toggled per micro-batch
            self.model.set_requires_gradient_sync(False)
            return _ResetGradientSync(self.model)
        return contextlib.nullcontext()

    def _model_loss(self, fields: dict[str, Tensor]) -> tuple[Tensor, Any, dict[str, Tensor]]:
        """Normalized images, float outputs and the estimator's loss terms of a micro-batch's tensor fields:
        the part of the step ``compile="step"`` compiles as one graph."""
        images = self.estimator.normalize(fields["image"])
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.forward_model(images, fields.get("dataset_index"))  # each sample's task
        outputs = outputs.float()
        return images, outputs, self.estimator.loss(outputs, fields)

    def _forward_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a micro-batch and its named terms (detached), through the estimator protocol."""
        # tensors only: a compiled step would guard on (and recompile for) every list of image ids
        images, outputs, losses = self._loss_of({k: v for k, v in batch.items() if isinstance(v, Tensor)})
        loss = losses["loss"]
        parts = {k: v.detach() for k, v in losses.items() if k != "loss"}
        if self.extra_loss is not None:
            loss = loss + self.extra_loss(batch, images, outputs)
            parts.update({k: torch.as_tensor(v).detach() for k, v in getattr(self.extra_loss, "last_parts", {}).items()})
        if not torch.isfinite(loss):
            raise PoseforgeError(f"step {self.step}: the loss is {float(loss)}; lower optim.lr or check the data")
        return loss, parts

    def _optimizer_step(self) -> Tensor | float:
        """Clip, step, schedule, EMA; returns the gradient norm before clipping (NaN without clipping) as a
        device tensor: read only when logged, so a CUDA step does not wait for the GPU (no host sync)."""
        clip = self.config.optim.clip_grad
        grad_norm: Tensor | float = math.nan
        if self.dist.enabled:  # DDP averages the model's gradients; the auxiliary module's are averaged here
            for p in self.auxiliary_params:
                if p.grad is not None:
                    p.grad.copy_(all_reduce_mean(p.grad))
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = list(self.model.parameters()) + self.auxiliary_params if self.auxiliary_params else self.model.parameters()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.estimator)
        return grad_norm

    # ------------------------------------------------------------------------------------------ epochs
    def _end_epoch(self) -> None:
        config = self.config
        self.epoch += 1
        self.batch_in_epoch = 0
        due = config.val_interval > 0 and (self.epoch % config.val_interval == 0 or self.epoch == config.schedule.epochs)
        improved = False
        if due and self.val_sets:
            stats, metric, higher = self._validate()
            self.last_stats = stats
            score = stats.get(metric, math.nan)
            # a tie goes to the later epoch: a run whose AP is still 0 keeps its most trained model, not its first
            if not math.isnan(score) and (math.isnan(self.best_score) or
                                          (score >= self.best_score if higher else score <= self.best_score)):
                self.best_score, self.best_metric, self.best_epoch, improved = score, metric, self.epoch, True
            self._record({"kind": "val", "epoch": self.epoch, "step": self.step, **stats})
        if improved:  # best first, last.pt last: last.pt commits the epoch (module doc)
            self._save("best.pt")
            self._save_best_model()
        self._save("last.pt")
        if self.dist.is_main:
            write_curves(self.metrics_path, self.run_dir / "curves.png", f"{config.name}: {self.estimator.config.name}")

    def validate(self) -> dict[str, float]:
        """The model's own metric (the EMA model's when on) on the validation set; with several sets (a
        mix of datasets) every stat per set as ``<task>/<stat>`` and the means of the common ones."""
        return self._validate()[0]

    def _validate(self) -> tuple[dict[str, float], str, bool]:
        if not self.val_sets:
            raise PoseforgeError("no validation set (val_interval is 0)")
        model = self.ema.module if self.ema is not None else self.model
        start = time.perf_counter()
        results = [(vs, evaluate(model, vs.data, task=vs.task, flip_test=self.config.flip_test,
                                 batch_size=self.config.data.val_batch_size, num_workers=self.config.data.num_workers,
                                 device=self.device)) for vs in self.val_sets]
        self.model.train()
        first = results[0][1]
        seconds = time.perf_counter() - start
        if len(results) == 1:
            stats = {k: float(v) for k, v in first.stats.items()}
            if self.dist.is_main:
                log.info(format_table(stats, title=f"epoch {self.epoch} (step {self.step}): {results[0][0].data.name} "
                                                   f"[{seconds:.0f} s]"))
            return stats, first.primary, first.higher_is_better
        stats = {}
        for vs, result in results:
            stats.update({f"{vs.name}/{k}": float(v) for k, v in result.stats.items()})
        for key in TASK_COLUMNS:
            values = [r.stats[key] for _, r in results if key in r.stats]
            if values:
                stats[key] = float(sum(values) / len(values))
        if self.dist.is_main:
            log.info(format_task_table(stats, f"epoch {self.epoch} (step {self.step}): per dataset [{seconds:.0f} s]"))
        return stats, first.primary, first.higher_is_better

    # ------------------------------------------------------------------------------------------ logging
    def _record(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _log_train(self, loss: float, grad_norm: float, images_per_s: float, parts: dict[str, float] | None = None,
                   data_share: float | None = None) -> None:
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        record = {"kind": "train", "epoch": round(self.step / self.steps_per_epoch, 4), "step": self.step, "loss": loss, "lr": lr,
                  "grad_norm": None if math.isnan(grad_norm) else grad_norm, "images_per_s": round(images_per_s, 2)}
        record.update({f"loss_{name}": value for name, value in (parts or {}).items()})
        self._record(record)
        if self.dist.is_main and not self.progress:
            log.info(f"epoch {self.epoch + 1}/{self.config.schedule.epochs} step {self.step}/{self.total_steps} "
                     f"loss {loss:.5g} lr {lr:.3g} {images_per_s:.1f} img/s"
                     f"{f' (waiting for data {data_share:.0%})' if data_share is not None else ''}")

    def _progress_bar(self) -> "_Bar | None":
        if not self.progress:
            return None
        return _Bar(self.total_steps, self.step, f"epoch {self.epoch + 1}/{self.config.schedule.epochs}")

    # ------------------------------------------------------------------------------------------ checkpoints
    def _model_state(self) -> dict[str, Tensor]:
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v.detach().cpu() for k, v in self.estimator.state_dict().items()}

    def _optimizer_state(self) -> dict[str, Any]:
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def _save(self, name: str) -> None:
        state = {
            "model": self._model_state(),
            "optimizer": self._optimizer_state(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "auxiliary": ({k: v.detach().cpu() for k, v in self.auxiliary.state_dict().items()}
                          if self.auxiliary is not None else None),
            "rng": capture_rng_state(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_score": self.best_score, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "elapsed": self._elapsed(),
            "setup_seconds": self.setup_seconds,
            "world_size": self.dist.world_size,
            "config": config_to_dict(self.config),
            "model_config": self.estimator.config.to_dict(),
        }
        if self.dist.is_main:
            save_checkpoint(self.run_dir / name, state)
        barrier()

    def _save_best_model(self) -> None:
        if self.ema is not None:
            source: nn.Module | None = self.ema.module
        elif self.strategy == "fsdp":
            source = None
        else:
            source = self.estimator
        state = self._model_state() if source is None else None
        if not self.dist.is_main:
            barrier()
            return
        if source is None:
            from ..models.loading import model_from_state_dict

            source = model_from_state_dict(self.estimator.config, state, "FSDP full state")
        record = json.dumps({"epoch": self.best_epoch, "step": self.step, self.best_metric or "score": self.best_score,
                             "config": self.config.name}, indent=2).encode()

        def write(folder: Path) -> None:  # training.json inside the swap: best/ is never half of two epochs
            source.save_pretrained(folder)
            write_bytes_atomic(folder / "training.json", record)

        replace_directory(self.run_dir / "best", write)
        barrier()

    def _tidy_run_dir(self) -> None:
        """Undo what a killed run left behind (main process, before anything writes into the run folder)."""
        recover_directory(self.run_dir / "best")
        removed = [*clean_stale_temp_files(self.run_dir), *clean_stale_temp_files(self.run_dir / "best")]
        if removed:
            log.info(f"{self.run_dir}: removed {len(removed)} temp file(s) of an interrupted run")

    def _repair_best(self, state: dict[str, Any]) -> None:
        """Rebuild best.pt / best/ when last.pt committed an improving epoch they lack (the earlier write
        order, last.pt first, killed right after it). Only then does last.pt hold exactly the best state."""
        epoch = int(state["epoch"])
        if int(state["best_epoch"]) != epoch or int(state["batch_in_epoch"]) != 0 or int(state["step"]) == 0:
            return
        best_pt, training = self.run_dir / "best.pt", self.run_dir / "best" / "training.json"
        try:
            in_best = int(load_checkpoint(best_pt)["epoch"]) == epoch
        except PoseforgeError:  # missing or unreadable
            in_best = False
        try:
            in_folder = json.loads(training.read_text())["epoch"] == epoch
        except (OSError, ValueError, KeyError):
            in_folder = False
        if in_best and in_folder:
            return
        log.warning(f"{self.run_dir}: the best model of epoch {epoch} was not written completely; rebuilding it from last.pt")
        self._save("best.pt")
        self._save_best_model()

    def _resume(self) -> None:
        path = self.run_dir / "last.pt"
        state = load_checkpoint(path)
        if state.get("world_size", 1) != self.dist.world_size:
            log.warning(f"{path}: saved with {state.get('world_size')} processes, resuming with {self.dist.world_size}: "
                        "the data order stays the same, the exact batches per process do not")
        if self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            options = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, state["model"], options=options)
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=options)
        else:
            self.estimator.load_weights({k: v.to(self.device) for k, v in state["model"].items()}, source=str(path))
            self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if not state.get("ema"):
                raise PoseforgeError(f"{path}: saved without EMA but the config turns EMA on")
            self.ema.load_state_dict(state["ema"])
        if self.auxiliary is not None:
            if state.get("auxiliary") is None:
                raise PoseforgeError(f"{path}: saved without the auxiliary module this run trains (a different kind of run?)")
            self.auxiliary.load_state_dict(state["auxiliary"])
        restore_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        # runs saved before the metric was the model's own stored their best AP as "best_ap"
        best = state.get("best_score", state.get("best_ap", math.nan))
        self.best_score = math.nan if best is None or best == -math.inf else float(best)
        self.best_metric = state.get("best_metric", "AP" if "best_ap" in state else None)
        self.best_epoch = int(state["best_epoch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.setup_seconds += float(state.get("setup_seconds", 0.0))
        self._repair_best(state)
        if self.dist.is_main and self.metrics_path.exists():  # drop records written after the checkpoint
            kept = [line for line in self.metrics_path.read_text().splitlines() if _keep_record(line, self.step, self.epoch)]
            write_bytes_atomic(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode())
        log.info(f"resumed {path}: epoch {self.epoch}, step {self.step}")


def _timed(batches: Iterator[Batch], trainer: "Trainer") -> Iterator[Batch]:
    """``batches``, adding the time each one took to arrive to ``trainer.data_seconds``: the loader's share
    of the step time (on CUDA the GPU runs ahead asynchronously, so this is the time the host waited)."""
    try:
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            trainer.data_seconds += time.perf_counter() - start
            if batch is None:
                return
            yield batch
    finally:  # an interrupted epoch shuts its DataLoader workers down now
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _auxiliary_groups(params: list[nn.Parameter], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups of an auxiliary module's parameters: the base learning rate, weight decay on
    weights (>= 2-D) only, as the trainer's groups of the model's head."""
    groups = [{"name": "auxiliary_decay", "params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"name": "auxiliary_no_decay", "params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [{**g, "lr": lr, "initial_lr": lr, "lr_scale": 1.0} for g in groups if g["params"]]


def _keep_record(line: str, step: int, epoch: int) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    if record.get("kind") == "val":
        return record.get("epoch", 0) <= epoch
    return record.get("step", 0) <= step


class _ResetGradientSync:
    """Turn FSDP gradient synchronization back on after a skipped micro-batch."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        self.model.set_requires_gradient_sync(True)


class _Bar:
    """A rich progress bar over all optimizer steps of the run."""

    def __init__(self, total: int, done: int, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
        self.task = self.progress.add_task(description, total=total, completed=done)
        self.progress.start()

    def update(self, completed: int) -> None:
        self.progress.update(self.task, completed=completed)

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def close(self) -> None:
        self.progress.stop()


def format_task_table(stats: dict[str, float], title: str = "") -> str:
    """Per-dataset table of a mix's validation stats (one row per task, then the mean)."""
    tasks = list(dict.fromkeys(k.split("/", 1)[0] for k in stats if "/" in k))
    columns = [c for c in TASK_COLUMNS if any(f"{t}/{c}" in stats for t in tasks)]
    width = max([len(t) for t in tasks] + [len("mean")])
    lines = [title] if title else []
    lines.append(f"{'task':<{width}}  " + "  ".join(f"{c:>7}" for c in columns))
    for t in tasks:
        lines.append(f"{t:<{width}}  " + "  ".join(_cell(stats.get(f"{t}/{c}")) for c in columns))
    lines.append(f"{'mean':<{width}}  " + "  ".join(_cell(stats.get(c)) for c in columns))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:7.4f}" if value is not None and not math.isnan(value) else f"{'-':>7}"
