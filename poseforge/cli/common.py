"""What the commands share: ``argparse`` types over the one size / range parser of :mod:`poseforge.coerce`,
the never-overwrite-an-input check, and a progress bar."""
from __future__ import annotations

import argparse
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..coerce import parse_range, parse_size
from ..errors import PoseforgeError

__all__ = ["size_argument", "range_argument", "same_path", "refuse_overwrite", "progress_bar", "add_verify_argument"]


def size_argument(text: str) -> tuple[int, int]:
    """``argparse`` type of a ``WIDTHxHEIGHT`` size."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def range_argument(text: str) -> tuple[int, int]:
    """``argparse`` type of ``N`` or ``MIN-MAX`` (e.g. people per image)."""
    try:
        return parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_verify_argument(parser: "argparse.ArgumentParser | argparse._ArgumentGroup") -> None:
    """``--no-verify``: load model folders without checking them against their ``checksums.json``
    (``args.verify`` is then ``False``; ``None`` otherwise: hash files up to 2 GiB, size-check bigger ones)."""
    parser.add_argument("--no-verify", dest="verify", action="store_const", const=False, default=None,
                        help="do not check model files against their checksums.json (huge files on slow disks)")


# ---------------------------------------------------------------------------------------------- output safety
def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (links and ``..`` resolved; also for paths not there yet)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def refuse_overwrite(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike], force: bool,
                     what: str = "outputs") -> None:
    """Raise a one-line :class:`PoseforgeError` before any work when a file to be written is one of the
    command's ``inputs`` (always: ``--force`` never destroys what the command reads) or already exists
    (unless ``force``)."""
    outputs = [Path(p) for p in outputs]
    inputs = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        for source in inputs:
            if same_path(out, source):
                raise PoseforgeError(f"{out}: is also an input of this command; write the {what} elsewhere "
                                     "(--force never overwrites an input)")
    if not force:
        existing = [p for p in outputs if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise PoseforgeError(f"{existing[0]}{more}: already exists; use --force to replace it or choose another "
                                 "output")


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a rich progress bar on stderr (stdout keeps the
    tables that scripts parse)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
