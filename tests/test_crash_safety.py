"""Crash-safe training runs: a run killed anywhere (inside checkpoint writes, at epoch ends, mid-step) and
resumed ends bitwise identical to an uninterrupted one; SIGINT saves a resumable state; folder swaps and
temp files recover.

Killed runs are forked children of the test process (torch already imported: a kill point costs about a
second). A child is killed either deterministically, by ``os._exit`` at its n-th file-system commit event
(a checkpoint's ``torch.save`` half written, a rename about to happen, an old folder about to be deleted),
or by a real SIGKILL from the parent after a random delay.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from poseforge.io import clean_stale_temp_files, recover_directory, replace_directory
from poseforge.models import load_model
from poseforge.train import Trainer, load_config
from poseforge.train.checkpoint import load_checkpoint
from poseforge.train.engine import TrainingInterrupted

from test_train_engine import TINY

# 2 epochs x 4 steps, validation (AP 0: every epoch ties, so every epoch end writes best.pt and best/),
# EMA and drop path (global RNG) so that an inexact resume shows.
SETS = ["model.overrides.drop_path_rate=0.2", "ema.momentum=0.01", "ema.gamma=4"]
KILLED = 137


def config(*extra: str):
    return load_config("smoke", TINY + SETS + list(extra))


# ---------------------------------------------------------------------------------------------- kill points
class _Events:
    """Count the commit events of a run (checkpoint serialisations, renames, folder deletions); kill the
    process (``os._exit``: no clean-up, like SIGKILL) at event ``kill_at``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kill_at: int | None = None) -> None:
        self.count, self.kill_at, self.labels = 0, kill_at, []
        real_replace, real_save, real_rmtree = os.replace, torch.save, shutil.rmtree

        def replace(src: Any, dst: Any) -> None:
            self._event(f"replace {Path(dst).name}")  # the temp is complete, the rename not done
            real_replace(src, dst)

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if self._next_kills():  # a torn checkpoint: half its bytes written
                import io

                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
                f.flush()
                os._exit(KILLED)
            self._event("torch.save")
            real_save(obj, f, *args, **kwargs)

        def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
            self._event(f"rmtree {Path(path).name}")
            real_rmtree(path, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(shutil, "rmtree", rmtree)

    def _next_kills(self) -> bool:
        return self.kill_at is not None and self.count + 1 == self.kill_at

    def _event(self, label: str) -> None:
        self.count += 1
        self.labels.append(label)
        if self.count == self.kill_at:
            os._exit(KILLED)


def _in_child(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child; its exit status (0 done, KILLED killed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            work()
        except BaseException:  # noqa: BLE001 - any failure must show as a status, not run pytest on
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run(run: Path, extra: tuple[str, ...], kill_at: int | None = None) -> None:
    """Start or resume ``run`` (resume when it holds a last.pt), killed at event ``kill_at``."""
    _Events(pytest.MonkeyPatch(), kill_at)  # (a child process: never undone)
    Trainer(config(*extra), run, resume=(run / "last.pt").exists(), progress=False).fit()


def _killed_at_event(run: Path, extra: tuple[str, ...], kill_at: int) -> int:
    return _in_child(lambda: _run(run, extra, kill_at))


def _killed_after(run: Path, extra: tuple[str, ...], seconds: float) -> int:
    """SIGKILL a child run after ``seconds`` (a real signal, at whatever it is doing then)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _run(run, extra)
        finally:
            os._exit(0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# ---------------------------------------------------------------------------------------------- comparison
def _records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("images_per_s", None)  # wall-clock speed: the one field that differs between sessions
    return records


def assert_same_run(run: Path, reference: Path) -> None:
    """Weights, EMA, optimizer, best checkpoint, best model folder and metrics all bitwise equal."""
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(reference / name), load_checkpoint(run / name)
        assert (a["step"], a["epoch"], a["best_epoch"]) == (b["step"], b["epoch"], b["best_epoch"]), name
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
        assert all(torch.equal(v, b["ema"]["module"][k]) for k, v in a["ema"]["module"].items()), name
        assert all(torch.equal(s["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
                   for i, s in a["optimizer"]["state"].items()), name
    best_a, best_b = load_model(reference / "best").state_dict(), load_model(run / "best").state_dict()
    assert best_a.keys() == best_b.keys() and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert json.loads((run / "best/training.json").read_text()) == json.loads((reference / "best/training.json").read_text())
    assert _records(run) == _records(reference)
    assert not list(run.glob(".*")) and not list((run / "best").glob(".*"))  # no temp files or swap folders left


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[tuple[str, ...], tuple[Path, int]]:
    """Uninterrupted runs per extra config (made on first use) and their number of commit events."""
    cache: dict[tuple[str, ...], tuple[Path, int]] = {}
    root = tmp_path_factory.mktemp("reference")

    def get(extra: tuple[str, ...]) -> tuple[Path, int]:
        if extra not in cache:
            run = root / f"run{len(cache)}"
            mp = pytest.MonkeyPatch()
            try:
                events = _Events(mp)
                Trainer(config(*extra), run, progress=False).fit()
            finally:
                mp.undo()
            cache[extra] = (run, events.count)
        return cache[extra]

    return get  # type: ignore[return-value]


def _kill_chain(root: Path, reference: Path, extra: tuple[str, ...], total_events: int, seed: int, kills: int,
                random_delays: int = 0, delays: tuple[float, float] = (0.2, 2.0)) -> tuple[int, int]:
    """Kill runs ``kills`` times at random commit events and ``random_delays`` times by SIGKILL after a
    random delay, resuming each time. A run that finishes (a kill drawn past its end) is compared with
    ``reference`` and a new one started. Returns (runs compared, SIGKILLs that hit a running process)."""
    rng = random.Random(seed)
    runs, signalled, run = 0, 0, root / "run0"

    def finished() -> Path:
        nonlocal runs
        assert_same_run(run, reference)
        runs += 1
        return root / f"run{runs}"

    plan = ["event"] * kills + ["delay"] * random_delays
    rng.shuffle(plan)
    for kind in plan:
        if kind == "event":
            # up to a full run's events: a resumed session replays at most what the whole run commits
            kill_at = rng.randint(1, total_events)
            status = _killed_at_event(run, extra, kill_at)
            assert status in (KILLED, 0), f"the run failed (status {status}) on its way to event {kill_at}"
        else:
            status = _killed_after(run, extra, rng.uniform(*delays))
            assert status in (-signal.SIGKILL, 0), f"the run failed (status {status})"
            signalled += status != 0
        if status == 0:
            run = finished()
    assert _in_child(lambda: _run(run, extra)) == 0
    finished()
    return runs, signalled


@pytest.mark.parametrize("extra, seed", [((), 1), (("checkpoint_steps=3",), 2)])
def test_killed_anywhere_resumes_identically(tmp_path, reference, extra, seed):
    ref, total = reference(extra)
    assert total >= 25  # config.yaml, per epoch: best.pt, 4 files + 3 renames + clean-up of best/, last.pt, curves
    runs, signalled = _kill_chain(tmp_path, ref, extra, total, seed, kills=6, random_delays=2)
    assert runs >= 1 and signalled >= 1


# the reported window (before last.pt's rename at an improving epoch end), a torn best.pt, best/ half swapped
# (target renamed away, .ready not yet in) and the old folder's removal: the default suite's picks
KEY_EVENTS = ("torch.save", "replace best", "rmtree .best.old", "replace last.pt")


@pytest.mark.parametrize("which", [pytest.param(KEY_EVENTS, id="key"),
                                   pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_commit_events_of_an_epoch_end(tmp_path, reference, which):
    """Killed at commit events of the first (improving) epoch end, then resumed."""
    ref, _ = reference(())
    # one session's events: config.yaml, then epoch 1's end (best.pt, best/ files and swap, last.pt, curves)
    mp = pytest.MonkeyPatch()
    try:
        probe = _Events(mp)
        Trainer(config("max_steps=4"), tmp_path / "probe", progress=False).fit()
    finally:
        mp.undo()
    first_epoch = probe.count
    assert any(label == "replace last.pt" for label in probe.labels)
    points = [n for n in range(2, first_epoch + 1)  # (event 1 is config.yaml)
              if which is None or probe.labels[n - 1] in which]
    assert len(points) >= (len(which) if which else 10)
    for kill_at in points:
        run = tmp_path / f"run{kill_at}"
        assert _killed_at_event(run, (), kill_at) == KILLED
        if (run / "last.pt").exists():
            state = load_checkpoint(run / "last.pt")
            if state["best_epoch"] == state["epoch"] > 0:  # last.pt committed an improving epoch: best/ is there
                assert json.loads((run / "best/training.json").read_text())["epoch"] == state["epoch"]
                assert load_checkpoint(run / "best.pt")["epoch"] == state["epoch"]
        assert _in_child(lambda: _run(run, ())) == 0
        assert_same_run(run, ref)


def test_best_written_by_the_old_order_is_rebuilt(tmp_path, reference):
    """A run folder of the earlier write order (last.pt first), killed before best.pt / best/ and with a
    0-byte temp file left: resume rebuilds best from last.pt and removes the temp file."""
    ref, _ = reference(())
    run = tmp_path / "run"
    Trainer(config("max_steps=4"), run, progress=False).fit()  # epoch 1 end: best_epoch == epoch == 1
    (run / "best.pt").unlink()
    shutil.rmtree(run / "best")
    (run / ".best.pt.abcd_123.tmp").touch()
    (run / ".user.notes.tmp").write_text("mine")  # not a poseforge temp name: kept
    trainer = Trainer(config(), run, resume=True, progress=False)
    assert not (run / ".best.pt.abcd_123.tmp").exists() and (run / ".user.notes.tmp").read_text() == "mine"
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    assert json.loads((run / "best/training.json").read_text())["epoch"] == 1
    (run / ".user.notes.tmp").unlink()
    trainer.fit()
    assert_same_run(run, ref)


# ---------------------------------------------------------------------------------------------- SIGINT
def _signal_at_step(trainer: Trainer, monkeypatch: pytest.MonkeyPatch, step: int, signum: int, times: int = 1) -> None:
    real = trainer._optimizer_step

    def stepping() -> float:
        norm = real()
        if trainer.step + 1 == step:  # trainer.step is counted after this call returns
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return norm

    monkeypatch.setattr(trainer, "_optimizer_step", stepping)


@pytest.mark.parametrize("stop_at, signum", [(3, signal.SIGINT), (4, signal.SIGTERM)])  # mid-epoch; an epoch's last step
def test_signal_saves_and_resumes_identically(tmp_path, reference, monkeypatch, stop_at, signum):
    ref, _ = reference(())
    run = tmp_path / "run"
    trainer = Trainer(config(), run, progress=False)
    _signal_at_step(trainer, monkeypatch, stop_at, signum)
    with pytest.raises(TrainingInterrupted) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "\n" not in message and signal.Signals(signum).name in message and "--resume" in message
    state = load_checkpoint(run / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (stop_at, 0, stop_at)  # exact position
    assert not (run / "best.pt").exists()  # the interrupted epoch's validation is left to the resumed run
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    Trainer(config(), run, resume=True, progress=False).fit()
    assert_same_run(run, ref)


def test_cli_interrupt_is_one_line_and_nonzero(tmp_path, monkeypatch, capsys):
    from poseforge import cli
    from poseforge.train import engine

    real = engine.Trainer._optimizer_step

    def stepping(self) -> float:
        norm = real(self)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return norm

    monkeypatch.setattr(engine.Trainer, "_optimizer_step", stepping)
    run = tmp_path / "run"
    sets = [a for s in TINY + SETS for a in ("--set", s)]
    assert cli.main(["train", "--config", "smoke", "--out", str(run), *sets]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("poseforge train")]
    assert len(err) == 1 and "interrupted by SIGINT at step 2" in err[0] and "--resume" in err[0]
    assert load_checkpoint(run / "last.pt")["step"] == 2


def test_second_signal_aborts_at_once(tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(config(), run, progress=False)
    _signal_at_step(trainer, monkeypatch, 2, signal.SIGINT, times=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (run / "last.pt").exists()  # nothing saved: the second signal came before the save
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------------------------------- folder swaps
def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "weights").write_text(text)
    return path


def test_recover_directory_keeps_the_only_good_copy(tmp_path):
    # the earlier protocol died between its renames: target gone, .old complete, .new (unknown state) beside it
    _folder(tmp_path / ".best.old", "good")
    _folder(tmp_path / ".best.new", "partial")
    assert recover_directory(tmp_path / "best") == tmp_path / "best"
    assert (tmp_path / "best/weights").read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    # a complete new folder (.ready) is swapped in, with or without the target present
    _folder(tmp_path / ".best.ready", "newer")
    recover_directory(tmp_path / "best")
    assert (tmp_path / "best/weights").read_text() == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    shutil.rmtree(tmp_path / "best")
    _folder(tmp_path / ".best.ready", "newest")
    _folder(tmp_path / ".best.old", "older")
    recover_directory(tmp_path / "best")
    assert (tmp_path / "best/weights").read_text() == "newest" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    # only the clean-up of .old was cut short
    _folder(tmp_path / ".best.old", "stale")
    recover_directory(tmp_path / "best")
    assert (tmp_path / "best/weights").read_text() == "newest" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_replace_directory_after_a_crash_and_on_error(tmp_path):
    _folder(tmp_path / ".best.old", "good")  # a crash left only the old copy
    _folder(tmp_path / ".best.new", "partial")

    def failing(folder: Path) -> None:
        (folder / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        replace_directory(tmp_path / "best", failing)
    assert (tmp_path / "best/weights").read_text() == "good"  # recovered first, then untouched by the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    replace_directory(tmp_path / "best", lambda folder: (folder / "weights").write_text("new"))
    assert (tmp_path / "best/weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_clean_stale_temp_files_only_touches_poseforge_names(tmp_path):
    ours = [".last.pt.k3j_9x0a.tmp", ".model.safetensors.abcdefgh.tmp", ".weights.12345678.part"]
    theirs = ["notes.tmp", ".notes.tmp", ".last.pt.SHORT.tmp", "data.part", ".x.ABCDEFGH.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a folder of that name is not a temp file of ours
    removed = clean_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs + [".dir.abcdefgh.tmp"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_killed_anywhere_long(tmp_path, reference, seed):
    """The longer variant: 20 commit-event kills and 10 random-delay SIGKILLs per chain."""
    extra = ("checkpoint_steps=2",) if seed % 2 else ()
    ref, total = reference(extra)
    # shorter delays than the quick test's: most of these tiny runs are over within ~1 s of starting
    runs, signalled = _kill_chain(tmp_path, ref, extra, total, 100 + seed, kills=20, random_delays=10,
                                  delays=(0.05, 0.8))
    assert runs >= 1 and signalled >= 5
