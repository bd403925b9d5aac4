"""Shared test fixtures: deterministic seeds and the real sample data in ../shared (skipped if absent)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("POSEFORGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture(autouse=True, scope="session")
def _private_weights_cache(tmp_path_factory):
    """An empty POSEFORGE_HOME and no mirror or offline switch: a developer's own cache (say, a downloaded
    RTMDet-nano that ``--detector auto`` would pick) never changes what the tests see, nor do tests write to it."""
    saved = {k: os.environ.get(k) for k in ("POSEFORGE_HOME", "POSEFORGE_MIRROR", "POSEFORGE_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ["POSEFORGE_HOME"] = str(tmp_path_factory.mktemp("poseforge-home"))
    for key in ("POSEFORGE_MIRROR", "POSEFORGE_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.pop(key, None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the project root (or $POSEFORGE_SHARED); tests using it skip when absent."""
    if not (SHARED / "peer-data").is_dir():
        pytest.skip(f"real sample data not found at {SHARED} (set POSEFORGE_SHARED to the shared folder)")
    return SHARED


@pytest.fixture(scope="session")
def oracle_python() -> Path:
    """The python of the mmpose 1.3.2 reference venv (``$POSEFORGE_ORACLE_PYTHON``, else ``oracle-venv`` beside
    the shared folder) for equality tests; they skip when it is absent."""
    python = Path(os.environ.get("POSEFORGE_ORACLE_PYTHON", SHARED.parent / "oracle-venv" / "bin" / "python"))
    if not python.exists() or not (SHARED / "oracle" / "mm_oracle_shim.py").exists():
        pytest.skip(f"mmpose oracle venv not found at {python} (see shared/oracle/README.md; set POSEFORGE_ORACLE_PYTHON)")
    return python


@pytest.fixture(scope="session")
def peer_data(shared_dir: Path) -> Path:
    return shared_dir / "peer-data"


@pytest.fixture()
def one_thread():
    """One intra-op thread: small kernels on a shared 2-core machine avoid OpenMP spin-wait stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def coco_file(peer_data: Path) -> Path:
    """The real COCO keypoint sample (4 images, 14 annotations)."""
    return peer_data / "coco/test_coco.json"
