"""The training engine: one loop for every model family.

:class:`Trainer` builds the model (``create_model``), its loss (from the codec), the data, AdamW with
layer-wise LR decay and the LR schedule from a :class:`~poseforge.train.config.TrainConfig`, then
``fit()`` runs epochs of optimizer steps: targets are encoded on the device by ``model.codec``, the
forward pass runs under bf16 autocast on CUDA (fp32 on CPU), gradients are accumulated, clipped and
applied, an optional EMA follows, and every ``val_interval`` epochs the model (the EMA one when on) is
scored with COCO AP on the validation set.

Run folder (``run_dir``)::

    config.yaml     the full experiment config (what --resume reads back)
    metrics.jsonl   one JSON record per log interval ("train") and per validation ("val")
    curves.png      training loss and validation AP, redrawn after each validation
    last.pt         resumable state (model, optimizer, schedule, scaler, EMA, RNGs, data position)
    best.pt         the state of the best validation so far
    best/           the best model as a model folder: ``poseforge.load_model(run_dir / "best")``

Resuming (``Trainer(config, run_dir, resume=True)``) restores ``last.pt`` and continues with the exact
batches, augmentations, dropout draws and learning rates the uninterrupted run would have used.

Extension points: ``data.sources`` trains a multi-task model on a ratio-mixed set of datasets (each
sample's dataset index goes to the model and the task-balanced loss; validation reports AP per
dataset; see :mod:`poseforge.train.multitask`); ``setup_model`` may adapt or replace the freshly built
model before the optimizer sees it (load partial weights, freeze parameters) and ``extra_loss`` adds
a term to every step's loss (distillation from a teacher; see :mod:`poseforge.train.distill`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..data.transforms import Batch, TopDownTransform
from ..errors import PoseforgeError
from ..evaluation.coco import format_table
from ..evaluation.runner import EvalSet, evaluate_model
from ..io import write_bytes_atomic
from ..models.estimator import outputs_to_float
from .checkpoint import capture_rng_state, load_checkpoint, replace_directory, restore_rng_state, save_checkpoint
from .compiling import CompiledForward
from .config import TrainConfig, config_to_dict, save_config
from .curves import write_curves
from .data import (ResumableBatchSampler, TopDownSamples, build_train_source, build_val_set, gpu_batch,
                   make_loader, sample_seed)
from .distributed import (DistInfo, all_reduce_mean, barrier, choose_strategy, init_distributed, wrap_model)
from .ema import ModelEMA
from .init import init_position_embeddings
from .losses import KeypointMapAuxLoss, build_loss
from .optim import LRSchedule, build_optimizer

__all__ = ["Trainer", "resolve_device"]

log = logging.getLogger("poseforge")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PoseforgeError(f"device '{name}' requested but CUDA is not available")
    return device


class Trainer:
    """Train a model as ``config`` describes, writing into ``run_dir``.

    Args:
        config: the experiment.
        run_dir: output folder (created).
        resume: continue from ``run_dir/last.pt``.
        progress: show a progress bar (default: when stderr is a terminal, on the main process).
        setup_model: called with the built (and ``model.init``-loaded) model before it moves to the device
            and the optimizer is made; may modify it in place or return a replacement.
        extra_loss: ``(batch, normalized images, float outputs) -> scalar`` added to every micro-batch's loss.
    """

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike, resume: bool = False,
                 progress: bool | None = None, *, setup_model: Callable[[nn.Module], nn.Module | None] | None = None,
                 extra_loss: Callable[[Batch, Tensor, Any], Tensor] | None = None) -> None:
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

        # ----- model (seeded: the same seed gives the same initial weights)
        torch.manual_seed(config.seed)
        model = create_model(config.model.name, **config.model.overrides)
        if config.model.init:
            init = load_model(config.model.init)
            model.load_weights(init.state_dict(), source=str(config.model.init))
        else:
            init_position_embeddings(model, config.model.pos_embed_init)
        if setup_model is not None:
            model = setup_model(model) or model
        self.extra_loss = extra_loss
        self.estimator = model.to(self.device)
        if config.channels_last:  # 4-D tensors only: convolution weights
            self.estimator.to(memory_format=torch.channels_last)
        self.codec = model.codec
        self.loss_fn = build_loss(getattr(self.codec, "name", ""), config.loss)
        if config.loss.keypoint_map_weight > 0:
            if not hasattr(model.head, "return_maps"):
                raise PoseforgeError(f"loss.keypoint_map_weight needs a head with keypoint maps (simcc), "
                                     f"not {type(model.head).__name__}")
            model.head.return_maps = True
            self.loss_fn = KeypointMapAuxLoss(self.loss_fn, model.config.input_size, config.loss.keypoint_map_weight,
                                              config.loss.keypoint_map_sigma)
        self.keypoint_set = model.keypoint_set.name
        # A mix of datasets trains a multi-task model: each sample's dataset index goes to it and to the loss.
        # (A multi-task model on one plain dataset trains its first task.)
        self.mixed = bool(config.data.sources)
        if self.mixed and not getattr(model, "takes_dataset_index", False):
            raise PoseforgeError(f"data.sources (a multi-dataset mix) needs a multi-task model such as vitpose++-tiny, "
                                 f"not {config.model.name}")
        self.takes_index = self.mixed
        if self.takes_index:
            from .multitask import TaskBalancedHeatmapLoss

            self.loss_fn = TaskBalancedHeatmapLoss(model.num_keypoints_per_task(), config.loss.use_target_weight,
                                                   config.loss.loss_weight)

        # ----- data
        data = config.data
        micro_per_step = config.optim.accumulate
        global_batch = data.batch_size * self.dist.world_size
        self.synthetic = data.train.lower() == "synthetic" and not self.mixed
        if self.mixed:
            from .multitask import build_mixed_source

            self.source = build_mixed_source(config, model)
            per_epoch = len(self.source) // (global_batch * micro_per_step)
        elif self.synthetic and data.synthetic.fresh:  # rendered on the fly: built below, once its length is known
            per_epoch = data.synthetic.train_images // (global_batch * micro_per_step)
        else:  # a COCO-format dataset, or synthetic images rendered once and kept in memory
            self.source = build_train_source(data, self.keypoint_set)
            per_epoch = len(self.source) // (global_batch * micro_per_step)
        self.steps_per_epoch = config.schedule.steps_per_epoch or per_epoch
        if self.steps_per_epoch < 1:
            raise PoseforgeError(f"fewer training samples than one optimizer step needs "
                                 f"({global_batch} x {micro_per_step} accumulation)")
        self.batches_per_epoch = self.steps_per_epoch * micro_per_step
        self.total_steps = self.steps_per_epoch * config.schedule.epochs
        self.gpu_augment = data.gpu_augment and self.device.type == "cuda" and not self.mixed
        fresh = (self.synthetic and data.synthetic.fresh) or self.mixed  # a mix walks on through its sources
        self.render_on_device = fresh and self.gpu_augment
        if self.synthetic and data.synthetic.fresh:
            total_images = self.batches_per_epoch * global_batch * config.schedule.epochs
            self.source = build_train_source(data, self.keypoint_set, total_images,
                                             device=self.device if self.render_on_device else "cpu")
        use_udp = getattr(self.codec, "name", "") == "udp"
        self.transform = TopDownTransform(tuple(model.config.input_size), self.keypoint_set, use_udp=use_udp,
                                          augment=data.augment)
        self.sampler = ResumableBatchSampler(len(self.source), data.batch_size, config.seed, shuffle=True,
                                             rank=self.dist.rank, world_size=self.dist.world_size, fresh=fresh,
                                             batches_per_epoch=self.batches_per_epoch)
        self.samples = TopDownSamples(self.source, self.transform, config.seed, raw=self.gpu_augment and not fresh)
        self.val_set: EvalSet | None = None
        self.task_val_sets = None  # [(task, EvalSet)] of a multi-dataset mix
        if self.mixed:
            from .multitask import MixedSamples, build_task_val_sets, mixed_transforms

            transforms = mixed_transforms(model, self.source, use_udp, data.augment)
            self.samples = MixedSamples(self.source, transforms, config.seed, model.max_keypoints)
            if config.val_interval > 0:
                self.task_val_sets = build_task_val_sets(config, model)
        elif config.val_interval > 0:
            self.val_set = build_val_set(config, self.keypoint_set)

        # ----- optimization
        lr = config.optim.lr
        if config.optim.auto_scale_lr:
            lr = lr * global_batch * micro_per_step / config.optim.base_batch_size
        self.strategy = choose_strategy(self.estimator, config.distributed) if self.dist.enabled else "none"
        if self.strategy == "fsdp" and config.ema.momentum > 0:
            raise PoseforgeError("EMA is not supported together with FSDP; set ema.momentum=0 or distributed=ddp")
        self.model: nn.Module = wrap_model(self.estimator, self.strategy, self.dist, self.device, config.sync_bn)
        if self.strategy == "ddp":
            self.estimator = self.model.module  # SyncBatchNorm conversion may have replaced modules
        self.optimizer = build_optimizer(self.estimator, config.optim, lr)
        self.schedule = LRSchedule(self.optimizer, config.schedule, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.estimator, config.ema.momentum, config.ema.gamma) if config.ema.momentum > 0 else None
        self.forward_model = CompiledForward(self.model) if config.compile else self.model

        # ----- counters
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_ap = -math.inf
        self.best_epoch = -1
        self.elapsed = 0.0  # training seconds before this process (resumed runs)
        self.setup_seconds = 0.0  # seconds spent building model and data (rendering a cached set), all sessions
        self._fit_start: float | None = None
        self.last_stats: dict[str, float] = {}
        self.stopped_early = False

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        if resume:
            self._resume()
        elif self.dist.is_main:
            if (self.run_dir / "last.pt").exists():
                raise PoseforgeError(f"{self.run_dir} already holds a training run (last.pt); resume it or use another folder")
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
        """Train to the end of the schedule (or ``max_steps``); returns a summary dict."""
        config = self.config
        self._fit_start = time.perf_counter()
        stop = self._stop_reached()
        self.model.train()
        while self.epoch < config.schedule.epochs and not stop:
            steps = self._epoch_steps()
            try:
                for _ in steps:
                    if self._stop_reached():
                        stop = True
                        break
            finally:
                steps.close()  # shuts the DataLoader workers down now
            if self.batch_in_epoch >= self.batches_per_epoch:  # the epoch is complete
                self._end_epoch()
            else:
                self._save("last.pt")
        self.stopped_early = self.epoch < config.schedule.epochs
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "epochs": self.epoch,
                   "best_ap": self.best_ap if self.best_ap > -math.inf else None, "best_epoch": self.best_epoch,
                   "last_stats": self.last_stats, "seconds": self._elapsed(), "setup_seconds": self.setup_seconds,
                   "stopped_early": self.stopped_early}
        barrier()
        return summary

    def _elapsed(self) -> float:
        """Training seconds, earlier sessions of a resumed run included."""
        return self.elapsed + (time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0)

    def _stop_reached(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _batches(self) -> Iterator[Batch]:
        """This epoch's remaining micro-batches on the device."""
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        if self.render_on_device:
            for keys in self.sampler:
                raw = self.source.render_on_device([k[2] for k in keys])
                yield gpu_batch(raw, self.transform, self.device, seed=sample_seed(self.config.seed, keys[0][0], keys[0][1]))
            return
        loader = make_loader(self.samples, self.sampler, self.config.data.num_workers, self.device.type == "cuda")
        for batch in loader:
            if self.gpu_augment:
                yield gpu_batch(batch, self.transform, self.device)
            else:
                yield batch.to(self.device, non_blocking=True)

    def _epoch_steps(self) -> Iterator[int]:
        """Run the epoch's optimizer steps; yields after each one."""
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
        window_parts: dict[str, Tensor] = {}  # named terms of the loss (a loss's ``last_parts``), for the log
        window_steps, window_images, window_start = 0, 0, time.perf_counter()
        for batch in batches:
            micro += 1
            last_micro = micro == accumulate
            with self._no_sync(not last_micro):
                loss = self._forward_loss(batch) / accumulate
                self.scaler.scale(loss).backward()
            window_loss += loss.detach()
            for name, part in getattr(self.loss_fn, "last_parts", {}).items():
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
                self._log_train(mean_loss, grad_norm, window_images / max(seconds, 1e-9), parts)
                if bar is not None:
                    bar.describe(f"epoch {self.epoch + 1}/{config.schedule.epochs} loss {mean_loss:.3g}")
                window_loss.zero_()
                window_parts.clear()
                window_steps, window_images, window_start = 0, 0, time.perf_counter()
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

    def _forward_loss(self, batch: Batch) -> Tensor:
        targets = self.codec.encode(batch.keypoints, batch.visibility)
        if isinstance(self.loss_fn, KeypointMapAuxLoss):
            targets["keypoints"] = batch.keypoints
        images = self.estimator.normalize(batch.image)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        inputs = (batch.dataset_index,) if self.takes_index else ()
        if self.takes_index:
            targets["dataset_index"] = batch.dataset_index
        with autocast:
            outputs = self.forward_model(images, *inputs)
        outputs = outputs_to_float(outputs)
        loss = self.loss_fn(outputs, targets)
        if self.extra_loss is not None:
            if isinstance(self.loss_fn, KeypointMapAuxLoss):  # a teacher's outputs have no keypoint maps
                outputs = tuple(outputs[:-1])
            loss = loss + self.extra_loss(batch, images, outputs)
        if not torch.isfinite(loss):
            raise PoseforgeError(f"step {self.step}: the loss is {float(loss)}; lower optim.lr or check the data")
        return loss

    def _optimizer_step(self) -> float:
        clip = self.config.optim.clip_grad
        grad_norm = math.nan
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
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
        if due and (self.val_set is not None or self.task_val_sets is not None):
            stats = self.validate()
            self.last_stats = stats
            ap = stats.get("AP", -1.0)
            if ap > self.best_ap:
                self.best_ap, self.best_epoch, improved = ap, self.epoch, True
            self._record({"kind": "val", "epoch": self.epoch, "step": self.step, **stats})
        self._save("last.pt")
        if improved:
            self._save("best.pt")
            self._save_best_model()
        if self.dist.is_main:
            write_curves(self.metrics_path, self.run_dir / "curves.png", f"{config.name}: {self.estimator.config.name}")

    def validate(self) -> dict[str, float]:
        """COCO AP of the model (the EMA model when on) on the validation set (per dataset for a mix:
        ``<task>/AP`` ..., with ``AP`` the mean over the datasets)."""
        model = self.ema.module if self.ema is not None else self.model
        if self.task_val_sets is not None:
            from .multitask import format_task_table, validate_tasks

            start = time.perf_counter()
            stats = validate_tasks(model, self.task_val_sets, flip_test=self.config.flip_test,
                                   batch_size=self.config.data.val_batch_size, num_workers=self.config.data.num_workers,
                                   device=self.device)
            self.model.train()
            if self.dist.is_main:
                log.info(format_task_table(stats, f"epoch {self.epoch} (step {self.step}): AP per dataset "
                                                  f"[{time.perf_counter() - start:.0f} s]"))
            return stats
        if self.val_set is None:
            raise PoseforgeError("no validation set (val_interval is 0)")
        start = time.perf_counter()
        result = evaluate_model(model, self.val_set, flip_test=self.config.flip_test,
                                batch_size=self.config.data.val_batch_size, num_workers=self.config.data.num_workers,
                                device=self.device)
        self.model.train()
        stats = {k: float(v) for k, v in result.stats.items()}
        if self.dist.is_main:
            log.info(format_table(stats, title=f"epoch {self.epoch} (step {self.step}): {self.val_set.name} "
                                               f"[{time.perf_counter() - start:.0f} s]"))
        return stats

    # ------------------------------------------------------------------------------------------ logging
    def _record(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _log_train(self, loss: float, grad_norm: float, images_per_s: float, parts: dict[str, float] | None = None) -> None:
        lr = max(g["lr"] for g in self.optimizer.param_groups)
        record = {"kind": "train", "epoch": round(self.step / self.steps_per_epoch, 4), "step": self.step, "loss": loss, "lr": lr,
                  "grad_norm": None if math.isnan(grad_norm) else grad_norm, "images_per_s": round(images_per_s, 2)}
        record.update({f"loss_{name}": value for name, value in (parts or {}).items()})
        self._record(record)
        if self.dist.is_main and not self.progress:
            log.info(f"epoch {self.epoch + 1}/{self.config.schedule.epochs} step {self.step}/{self.total_steps} "
                     f"loss {loss:.5g} lr {lr:.3g} {images_per_s:.1f} img/s")

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
            "rng": capture_rng_state(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_ap": self.best_ap, "best_epoch": self.best_epoch, "elapsed": self._elapsed(),
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
            from ..models.estimator import model_from_state_dict

            source = model_from_state_dict(self.estimator.config, state, "FSDP full state")
        replace_directory(self.run_dir / "best", lambda folder: source.save_pretrained(folder))
        write_bytes_atomic(self.run_dir / "best" / "training.json", json.dumps(
            {"epoch": self.best_epoch, "step": self.step, "AP": self.best_ap, "config": self.config.name}, indent=2).encode())
        barrier()

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
        restore_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        self.best_ap, self.best_epoch = float(state["best_ap"]), int(state["best_epoch"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.setup_seconds += float(state.get("setup_seconds", 0.0))
        if self.dist.is_main and self.metrics_path.exists():  # drop records written after the checkpoint
            kept = [line for line in self.metrics_path.read_text().splitlines() if _keep_record(line, self.step, self.epoch)]
            write_bytes_atomic(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode())
        log.info(f"resumed {path}: epoch {self.epoch}, step {self.step}")


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
