"""``poseforge weights [PATTERN] [--fetch NAME ...]``: the named weights, where they come from, and whether
they are here; ``--fetch`` downloads and converts them now (e.g. before going offline)."""
from __future__ import annotations

import argparse

from ..errors import PoseforgeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell pattern of names to list (default: all)")
    parser.add_argument("--fetch", nargs="+", metavar="NAME", default=None,
                        help="download (once, into POSEFORGE_HOME) and convert these weights now")
    parser.add_argument("--kind", choices=["pose", "detector"], default=None, help="list one kind only")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..hub import cache_home, is_available, list_weights, resolve_weights, weights_spec

    console = Console()
    if args.fetch:
        for name in args.fetch:
            spec = weights_spec(name, "pose") or weights_spec(name, "detector")
            if spec is None:
                raise PoseforgeError(f"{name}: no weights of that name; see poseforge weights")
            path = resolve_weights(spec.name, spec.kind)
            console.print(f"{spec.name}: {path}")
        return 0
    names = list_weights(args.pattern, kind=args.kind)
    if not names:
        raise PoseforgeError(f"no weights match '{args.pattern}'")
    table = Table(title=f"named weights (cache: {cache_home()})")
    for column in ("name", "kind", "here", "licence", "description"):
        table.add_column(column, overflow="fold")
    for name in names:
        spec = weights_spec(name, "pose") or weights_spec(name, "detector")
        here = "shipped" if spec.asset else ("yes" if is_available(name, spec.kind) else "download")
        table.add_row(name, spec.kind, here, spec.license, spec.description)
    console.print(table)
    console.print("An architecture alone (vitpose-b, rtmpose-m, dwpose-l ...) means its default weights.")
    return 0
