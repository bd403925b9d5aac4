"""Turn downloaded release files into a poseforge model folder (the converter of :mod:`poseforge.hub.releases`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import PoseforgeError
from . import convert_checkpoint

__all__ = ["convert_release"]


def convert_release(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, **options: Any) -> Path:
    """Convert a release into ``out_dir`` (``model.safetensors`` + ``config.json``).

    One file (an mmpose ``.pth``) is converted as is; several files (a Hugging Face ``config.json`` +
    ``model.safetensors``) must sit in one folder, which is converted as a Hugging Face folder.
    ``options`` go to :func:`~poseforge.convert.convert_checkpoint` (``format``, ``input_size`` ...).
    """
    files = [Path(p) for p in paths]
    if not files:
        raise PoseforgeError("convert_release: no files")
    parents = {f.parent for f in files}
    if len(files) > 1 and len(parents) != 1:
        raise PoseforgeError(f"convert_release: the files of one release must share a folder, got {sorted(map(str, parents))}")
    source = files[0] if len(files) == 1 else files[0].parent
    model = convert_checkpoint(source, **options)
    return model.save_pretrained(out_dir)
