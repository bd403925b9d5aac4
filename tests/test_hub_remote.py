"""Released weights by name: download once into POSEFORGE_HOME (here from a local mirror: no network),
checksums, offline mode, conversion with provenance, and the real RTMDet-nano as ``--detector rtmdet-nano``."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.errors import PoseforgeError
from poseforge.hub import (PROVENANCE_NAME, RemoteFile, WeightsSpec, is_available, placement_path, register_weights,
                           resolve_weights, weights_spec)
from poseforge.hub import cache as hub_cache
from poseforge.io import sha256_file
from poseforge.models import create_model, load_model
from poseforge.registry import WEIGHTS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RTMDET = SHARED / "peer-data" / "models" / "rtmdet-nano-person.onnx"
needs_rtmdet = pytest.mark.skipif(not RTMDET.is_file(), reason=f"the real RTMDet-nano ONNX is not at {RTMDET}")
RTMDET_SPEC = weights_spec("rtmdet-nano", "detector")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """An empty cache and no mirror, downloads allowed (a test that needs them sets a mirror)."""
    monkeypatch.setenv("POSEFORGE_HOME", str(tmp_path / "home"))
    for var in ("POSEFORGE_MIRROR", "POSEFORGE_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


def no_downloads(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"downloaded {url} although the cache holds it")

    monkeypatch.setattr(hub_cache, "_download", refuse)


def mirror_rtmdet(mirror: Path, onnx_bytes: bytes) -> None:
    """The release as upstream ships it: a zip holding ``<folder>/end2end.onnx`` beside SDK files."""
    remote = RTMDET_SPEC.files[0]
    folder = mirror / remote.folder
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / Path(remote.url).name, "w") as z:
        z.writestr("rtmdet-nano/end2end.onnx", onnx_bytes)
        z.writestr("rtmdet-nano/pipeline.json", "{}")


def test_registry_names_real_releases():
    spec = weights_spec("vitpose-b")  # an architecture alone: its default weights
    assert spec.name == "vitpose-b.coco" and spec.files[0].hf_repo == "usyd-community/vitpose-base"
    assert weights_spec("rtmpose-m").name == "rtmpose-m.body7"
    rtm = weights_spec("rtmpose-m.body7").files[0]
    assert rtm.url.startswith("https://download.openmmlab.com/") and rtm.sha256 == "e48f03d0" and rtm.sha256 in rtm.url
    assert weights_spec("vitpose-g") is None  # no released weights: not a name
    assert RTMDET_SPEC.name == "rtmdet-nano.person" and len(RTMDET_SPEC.files[0].sha256) == 64
    with pytest.raises(PoseforgeError, match="exactly one of url and hf_repo"):
        RemoteFile("x.pth")
    with pytest.raises(PoseforgeError, match="lowercase hex"):
        RemoteFile("x.pth", url="https://example.org/x.pth", sha256="XYZ")


@needs_rtmdet
def test_rtmdet_downloads_once_verified_and_runs(home, tmp_path, monkeypatch):
    mirror_rtmdet(tmp_path / "mirror", RTMDET.read_bytes())
    monkeypatch.setenv("POSEFORGE_MIRROR", str(tmp_path / "mirror"))
    assert not is_available("rtmdet-nano", "detector")
    path = resolve_weights("rtmdet-nano", "detector")
    assert path == placement_path(RTMDET_SPEC.files[0]) and sha256_file(path) == RTMDET_SPEC.files[0].sha256
    assert not list(path.parent.glob("*.part"))
    # Cached: no mirror, offline, and no download attempted.
    monkeypatch.delenv("POSEFORGE_MIRROR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    no_downloads(monkeypatch)
    assert is_available("rtmdet-nano", "detector") and resolve_weights("rtmdet-nano.person", "detector") == path
    from poseforge.inference.detectors import load_detector
    from poseforge.inference.detectors.builtin import auto_detector_name

    detector = load_detector("rtmdet-nano", "cpu")
    assert type(detector).__name__ == "OnnxDetector" and detector.path == path
    assert auto_detector_name() == "rtmdet-nano"
    import cv2

    image = cv2.imread(str(SHARED / "peer-data" / "coco" / "000000000785.jpg"))
    if image is not None:  # the sample with one person (../shared/README.md)
        dets = detector.detect_batch([image[..., ::-1].copy()])[0]
        assert len(dets.boxes) == 1


@needs_rtmdet
def test_a_corrupt_release_is_refused_and_not_kept(home, tmp_path, monkeypatch):
    data = bytearray(RTMDET.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mirror_rtmdet(tmp_path / "mirror", bytes(data))
    monkeypatch.setenv("POSEFORGE_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(PoseforgeError, match="does not match the release") as e:
        resolve_weights("rtmdet-nano", "detector")
    assert "\n" not in str(e.value)
    target = placement_path(RTMDET_SPEC.files[0])
    assert not target.exists() and not [p for p in target.parent.iterdir()]  # no partial files left


def test_offline_error_names_the_file_and_where_to_place_it(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POSEFORGE_OFFLINE", "1")
    with pytest.raises(PoseforgeError) as e:
        resolve_weights("rtmdet-nano", "detector")
    message = str(e.value)
    assert "\n" not in message and "downloads are off" in message
    assert str(placement_path(RTMDET_SPEC.files[0])) in message and RTMDET_SPEC.files[0].url in message
    from poseforge.inference.detectors.builtin import auto_detector_name

    assert auto_detector_name() == "bundled"  # nothing cached: the built-in detector, no download
    # The CLI says the same in one line.
    import cv2

    cv2.imwrite(str(tmp_path / "photo.jpg"), np.zeros((64, 48, 3), np.uint8))
    assert main(["predict", str(tmp_path / "photo.jpg"), "--model", "rtmpose-m.body7", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rtmpose-m.body7" in err and "downloads are off" in err


def test_unreachable_network_is_one_line(home, monkeypatch, tmp_path):
    monkeypatch.setenv("POSEFORGE_MIRROR", str(tmp_path / "empty-mirror"))
    with pytest.raises(PoseforgeError, match="cannot download .* place the file at") as e:
        resolve_weights("rtmpose-t.body7")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("POSEFORGE_OFFLINE", "1")
    with pytest.raises(PoseforgeError) as e:  # a two-file hub release names both files
        resolve_weights("vitpose-b")
    message = str(e.value)
    assert "usyd-community/vitpose-base/config.json" in message and "also needs model.safetensors" in message


@needs_rtmdet
def test_a_file_placed_by_hand_is_used(home, monkeypatch):
    target = placement_path(RTMDET_SPEC.files[0])
    target.parent.mkdir(parents=True)
    shutil.copy(RTMDET, target)
    monkeypatch.setenv("POSEFORGE_OFFLINE", "1")
    no_downloads(monkeypatch)
    assert resolve_weights("rtmdet-nano", "detector") == target


@pytest.fixture()
def temporary_weights():
    names: list[str] = []

    def add(spec: WeightsSpec) -> WeightsSpec:
        WEIGHTS.register(spec.name, spec, overwrite=True)
        names.append(spec.name)
        return spec

    yield add
    for name in names:
        WEIGHTS._entries.pop(name, None)


def test_hub_release_converts_once_with_provenance(home, tmp_path, monkeypatch, temporary_weights):
    from hf_fixtures import random_hf_vitpose

    hf = random_hf_vitpose(0, 17, (64, 48), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)
    repo = "test-org/tiny-vitpose"
    hf.save_pretrained(tmp_path / "mirror" / repo)
    temporary_weights(WeightsSpec(
        "vitpose-tiny.test-release", "pose", license="Apache-2.0", source="test",
        files=(RemoteFile("config.json", hf_repo=repo), RemoteFile("model.safetensors", hf_repo=repo)),
        converter="poseforge.convert.pretrained:convert_release", convert_options={"format": "hf"}))
    monkeypatch.setenv("POSEFORGE_MIRROR", str(tmp_path / "mirror"))
    model = load_model("vitpose-tiny.test-release")
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x).heatmaps, hf(pixel_values=x).heatmaps, rtol=0, atol=1e-5)
    folder = resolve_weights("vitpose-tiny.test-release")
    provenance = json.loads((folder / PROVENANCE_NAME).read_text())
    weights_file = tmp_path / "mirror" / repo / "model.safetensors"
    assert provenance["license"] == "Apache-2.0" and provenance["files"][1]["sha256"] == sha256_file(weights_file)
    assert provenance["model_sha256"] == sha256_file(folder / "model.safetensors")
    # Second use: from the converted folder, with no mirror, offline, nothing downloaded or converted again.
    monkeypatch.delenv("POSEFORGE_MIRROR")
    monkeypatch.setenv("POSEFORGE_OFFLINE", "1")
    no_downloads(monkeypatch)
    monkeypatch.setattr("poseforge.convert.pretrained.convert_release",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("converted twice")))
    again = create_model("vitpose-tiny.test-release", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_mmpose_release_with_published_sha_prefix(home, tmp_path, monkeypatch, temporary_weights):
    from poseforge.models import build_model
    from poseforge.models.zoo import rtmpose_config

    torch.manual_seed(0)
    source = build_model(rtmpose_config("t", "coco17", (96, 128))).eval()
    release = tmp_path / "release.pth"
    torch.save({"state_dict": source.state_dict(), "meta": {"epoch": 1}}, release)
    digest = sha256_file(release)
    url_name = f"rtmpose-t_test-{digest[:8]}_20990101.pth"
    mirror = tmp_path / "mirror" / "releases.example.org"
    mirror.mkdir(parents=True)
    shutil.copy(release, mirror / url_name)

    def spec(sha: str) -> WeightsSpec:
        return WeightsSpec("rtmpose-t.test-release", "pose", source="test",
                           files=(RemoteFile(url_name, url=f"https://releases.example.org/{url_name}", sha256=sha),),
                           converter="poseforge.convert.pretrained:convert_release",
                           convert_options={"format": "rtmpose"})

    monkeypatch.setenv("POSEFORGE_MIRROR", str(tmp_path / "mirror"))
    temporary_weights(spec("0" * 8 if digest[:8] != "0" * 8 else "1" * 8))
    with pytest.raises(PoseforgeError, match="does not match"):
        load_model("rtmpose-t.test-release")
    temporary_weights(spec(digest[:8]))
    model = load_model("rtmpose-t.test-release")
    x = torch.randn(1, 3, 128, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), source(x)
    assert torch.equal(a.simcc_x, b.simcc_x) and torch.equal(a.simcc_y, b.simcc_y)
    assert np.isclose(model.config.input_size, (96, 128)).all()


def test_files_in_the_hugging_face_cache_are_not_fetched_again(home, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub

    snapshot = tmp_path / "hf-cache" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    asked = []

    def lookup(repo, filename, revision=None, **kwargs):
        asked.append((repo, filename, revision))
        return str(snapshot / filename) if (snapshot / filename).is_file() else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lookup)
    no_downloads(monkeypatch)
    remote = RemoteFile("config.json", hf_repo="usyd-community/vitpose-base")
    assert hub_cache.is_cached(remote)
    path, digest = hub_cache.fetch_file(remote, "vitpose-b.coco")
    assert path == snapshot / "config.json" and digest == sha256_file(path)
    assert asked[-1] == ("usyd-community/vitpose-base", "config.json", "main")
    assert not hub_cache.is_cached(RemoteFile("model.safetensors", hf_repo="usyd-community/vitpose-base"))
