"""Training-curve PNG drawn with OpenCV (no plotting library): loss by step, validation AP by epoch.

:func:`draw_curves` reads the records of a ``metrics.jsonl`` (``{"kind": "train", "step", "loss",
"lr"}`` and ``{"kind": "val", "epoch", "step", "AP", ...}``) and returns a BGR image with two panels.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from ..io import write_bytes_atomic

__all__ = ["draw_curves", "write_curves", "read_metrics"]

_BG, _AXIS, _GRID, _TEXT = (255, 255, 255), (60, 60, 60), (225, 225, 225), (30, 30, 30)
_LOSS, _SMOOTH, _AP = (200, 160, 120), (160, 70, 20), (40, 110, 230)  # BGR
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSONL metrics file (a torn last line from a crash is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade in ``[lo, hi]``; every mantissa 1..9 when the range spans less than
    about a decade (a loss falling from 1.1 to 0.55 would otherwise get a single tick)."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [t for t in (float(f"{m}e{e}") for e in decades for m in mantissas) if lo <= t <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks or [lo, hi]


def _nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round ticks in ``[lo, hi]``; ``integer``: whole-number steps only (epochs)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    if integer:  # the whole-number step whose tick count is nearest count + 1 (0..11 -> step 2, not 5)
        mag = 10 ** math.floor(math.log10(max(raw, 1.0)))
        step = min((m * mag for m in (1, 2, 5, 10)), key=lambda s: abs(math.floor((hi - lo) / s) - count))
    else:
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    """Short tick label: 1500 -> "1.5k" (``.0e`` would label 1500, 2000 and 2500 all "2e+03")."""
    if v == 0:
        return "0"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.0e}" if abs(v) < 0.01 else f"{v:.3g}"


class _Panel:
    def __init__(self, image: np.ndarray, box: tuple[int, int, int, int], xlim: tuple[float, float],
                 ylim: tuple[float, float], log_y: bool = False) -> None:
        self.image, self.box, self.log_y = image, box, log_y
        self.x0, self.x1 = xlim if xlim[1] > xlim[0] else (xlim[0], xlim[0] + 1)
        y0, y1 = ylim
        if log_y:
            y0, y1 = math.log10(max(y0, 1e-12)), math.log10(max(y1, 1e-12))
        self.y0, self.y1 = (y0, y1) if y1 > y0 else (y0 - 0.5, y0 + 0.5)

    def map(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        left, top, right, bottom = self.box
        if self.log_y:
            y = np.log10(np.maximum(y, 1e-12))
        px = left + (x - self.x0) / (self.x1 - self.x0) * (right - left)
        py = bottom - (y - self.y0) / (self.y1 - self.y0) * (bottom - top)
        return np.stack([px, py], -1)

    def frame(self, title: str, xlabel: str, yticks: Sequence[float], xticks: Sequence[float]) -> None:
        left, top, right, bottom = self.box
        for t in yticks:
            (_, py), = self.map(np.array([self.x0]), np.array([t])).astype(int)
            if top <= py <= bottom:
                cv2.line(self.image, (left, py), (right, py), _GRID, 1)
                cv2.putText(self.image, _fmt(t), (left - 52, py + 4), _FONT, 0.38, _TEXT, 1, cv2.LINE_AA)
        for t in xticks:
            (px, _), = self.map(np.array([t]), np.array([10 ** self.y0 if self.log_y else self.y0])).astype(int)
            if left <= px <= right:
                cv2.line(self.image, (px, bottom), (px, bottom + 4), _AXIS, 1)
                cv2.putText(self.image, _fmt(t), (px - 12, bottom + 18), _FONT, 0.38, _TEXT, 1, cv2.LINE_AA)
        cv2.rectangle(self.image, (left, top), (right, bottom), _AXIS, 1)
        cv2.putText(self.image, title, (left, top - 10), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
        cv2.putText(self.image, xlabel, ((left + right) // 2 - 20, bottom + 36), _FONT, 0.42, _TEXT, 1, cv2.LINE_AA)

    def line(self, x: np.ndarray, y: np.ndarray, color: tuple[int, int, int], thickness: int = 1, dots: bool = False) -> None:
        if len(x) == 0:
            return
        pts = np.round(self.map(np.asarray(x, float), np.asarray(y, float))).astype(np.int32)
        left, top, right, bottom = self.box
        pts[:, 0] = np.clip(pts[:, 0], left, right)
        pts[:, 1] = np.clip(pts[:, 1], top, bottom)
        if len(pts) > 1:
            cv2.polylines(self.image, [pts.reshape(-1, 1, 2)], False, color, thickness, cv2.LINE_AA)
        if dots or len(pts) == 1:
            for p in pts:
                cv2.circle(self.image, (int(p[0]), int(p[1])), 3, color, -1, cv2.LINE_AA)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < 3 or window <= 1:
        return values
    window = min(window, len(values))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def draw_curves(records: Iterable[dict[str, Any]], title: str = "", size: tuple[int, int] = (1000, 380)) -> np.ndarray:
    """Two panels: training loss by optimizer step (log scale, raw and smoothed) and validation AP by
    epoch. Returns a ``H x W x 3`` uint8 BGR image."""
    records = list(records)
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None and math.isfinite(r["loss"])]
    val = [r for r in records if r.get("kind") == "val" and r.get("AP") is not None]
    width, height = size
    image = np.full((height, width, 3), _BG, np.uint8)
    if title:
        cv2.putText(image, title, (20, 22), _FONT, 0.55, _TEXT, 1, cv2.LINE_AA)
    half = width // 2
    top, bottom = 60, height - 50
    steps = np.array([r["step"] for r in train], float)
    losses = np.array([r["loss"] for r in train], float)
    if len(train):
        lo, hi = float(losses.min()), float(losses.max())
        panel = _Panel(image, (70, top, half - 30, bottom), (0.0, float(steps.max())), (lo * 0.9, hi * 1.1), log_y=True)
        ticks = _log_ticks(lo * 0.9, hi * 1.1)
        panel.frame("training loss (log scale)", "step", ticks, _nice_ticks(0.0, float(steps.max())))
        panel.line(steps, losses, _LOSS, 1)
        panel.line(steps, _smooth(losses, max(1, len(losses) // 25)), _SMOOTH, 2)
    else:
        cv2.putText(image, "no training records yet", (80, height // 2), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
    if val:
        epochs = np.array([r["epoch"] for r in val], float)
        aps = np.array([r["AP"] for r in val], float)
        x_hi = float(max(epochs.max(), 1.0))
        panel = _Panel(image, (half + 70, top, width - 30, bottom), (0.0, x_hi), (0.0, 1.0))
        panel.frame(f"validation AP (best {aps.max():.3f})", "epoch", [0, 0.2, 0.4, 0.6, 0.8, 1.0],
                    _nice_ticks(0.0, x_hi, integer=True))
        panel.line(epochs, aps, _AP, 2, dots=True)
    else:
        cv2.putText(image, "no validation yet", (half + 80, height // 2), _FONT, 0.5, _TEXT, 1, cv2.LINE_AA)
    return image


def write_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "") -> None:
    """Draw ``metrics_path`` (JSONL) into ``png_path`` atomically."""
    image = draw_curves(read_metrics(metrics_path), title)
    ok, data = cv2.imencode(".png", image)
    if ok:
        write_bytes_atomic(png_path, data.tobytes())
