"""Integrity of model folders (the ``checksums.json`` record of ``save_pretrained``, checked by ``load_model``)
and non-finite model outputs as an error (issue 30)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.errors import PoseforgeError
from poseforge.inference.predictor import Predictor
from poseforge.models import create_model, load_model
from poseforge.models.estimators.base import CHECKSUMS_NAME, CONFIG_NAME, WEIGHTS_NAME
from poseforge.models import loading
from tests import protocol_stubs  # noqa: F401  (registers stub-bottomup, stub-dense)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small kernels, one intra-op thread

SIZE = (48, 64)  # a small vitpose-tiny input: saves, loads and predicts in milliseconds


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A folder written by save_pretrained (fp16, as shipped models are); tests copy it before changing it."""
    path = tmp_path_factory.mktemp("saved")
    create_model("vitpose-tiny", input_size=SIZE).save_pretrained(path, dtype=torch.float16)
    return path


@pytest.fixture()
def folder(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(saved, out)
    return out


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(path)
    return path


def _tensor_offset(path: Path, name: str) -> int:
    """File offset of the first byte of a tensor's data in a safetensors file (8-byte header length, JSON header)."""
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    return 8 + header_len + header[name]["data_offsets"][0]


def _flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def _flip_head_exponent(folder: Path) -> None:
    """The corruption of the report: one bit of an fp16 head weight's exponent (its high byte) flipped, which
    scales the weight by 2^16 (finite: the model then decodes scores in the hundreds instead of failing)."""
    weights = folder / WEIGHTS_NAME
    _flip_bit(weights, _tensor_offset(weights, "head.final_layer.weight") + 1, 6)


def _nan_head(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.head.parameters():
            p.fill_(float("nan"))


# ---------------------------------------------------------------------------------------------- the record
def test_save_pretrained_writes_a_matching_record(saved: Path):
    record = json.loads((saved / CHECKSUMS_NAME).read_text())
    assert record["format"] == "poseforge-checksums/1"
    assert set(record["files"]) == {WEIGHTS_NAME, CONFIG_NAME}
    for name, entry in record["files"].items():
        data = (saved / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    # the config it describes is the one the loader reads, and only the three files are left (no temporaries)
    assert json.loads((saved / CONFIG_NAME).read_text())["input_size"] == list(SIZE)
    assert sorted(p.name for p in saved.iterdir()) == sorted([CHECKSUMS_NAME, CONFIG_NAME, WEIGHTS_NAME])


def test_unmodified_folder_loads_verified(folder: Path):
    assert loading.verify_checksums(folder, [WEIGHTS_NAME, CONFIG_NAME], full=True) == 2
    model = load_model(folder, verify=True)
    assert model.input_size == SIZE and model.dtype == torch.float16


def test_flipped_weight_bit_is_a_one_line_error_and_verify_false_loads(folder: Path, saved: Path):
    _flip_head_exponent(folder)
    for verify in (None, True):
        with pytest.raises(PoseforgeError) as info:
            load_model(folder, verify=verify)
        message = str(info.value)
        assert "\n" not in message
        assert str(folder / WEIGHTS_NAME) in message and CHECKSUMS_NAME in message
        assert "re-download / re-export" in message and "verify=False" in message
    # the user's explicit choice: loads, unchecked
    corrupt = load_model(folder, verify=False).head.final_layer.weight.detach().double().view(-1)
    intact = load_model(saved).head.final_layer.weight.detach().double().view(-1)
    assert float(corrupt[0] / intact[0]) in (2.0 ** 16, 2.0 ** -16)  # one exponent bit
    assert torch.equal(corrupt.view(-1)[1:], intact.view(-1)[1:])


def test_changed_config_and_truncated_weights_are_caught(folder: Path, saved: Path):
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["flip_test"] = not config["flip_test"]  # well-formed, but not what was saved
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    with pytest.raises(PoseforgeError, match=r"config\.json: does not match its checksum"):
        load_model(folder)
    shutil.copy(saved / CONFIG_NAME, folder / CONFIG_NAME)
    load_model(folder)
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-1])  # same digest can't survive a size change: caught before hashing
    with pytest.raises(PoseforgeError, match=r"model\.safetensors: does not match its checksum"):
        load_model(folder)


@pytest.mark.parametrize("crash_in", ["write_bytes_atomic", "write_checksums"])
def test_save_interrupted_part_way_is_detected(folder: Path, monkeypatch, crash_in: str):
    """A crash after the new weights were renamed in (while writing config.json, or the record) leaves the old
    record beside new files: the next load reports the mismatch instead of pairing new weights with an old
    config; a complete rewrite is consistent again."""
    from poseforge.models.estimators import base

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(base, crash_in, crash)
        other = create_model("vitpose-tiny", input_size=SIZE)
        with torch.no_grad():  # surely other weights: the saved fixture may share this test's fresh seed
            next(other.parameters()).add_(1.0)
        with pytest.raises(KeyboardInterrupt):
            other.save_pretrained(folder, dtype=torch.float16)
    with pytest.raises(PoseforgeError, match=r"model\.safetensors: does not match its checksum"):
        load_model(folder)
    create_model("vitpose-tiny", input_size=SIZE).save_pretrained(folder, dtype=torch.float16)
    load_model(folder, verify=True)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_folder_without_record_loads(folder: Path):
    (folder / CHECKSUMS_NAME).unlink()
    _flip_head_exponent(folder)  # nothing to compare against: "not verified", as older exports and the assets
    assert loading.verify_checksums(folder, [WEIGHTS_NAME, CONFIG_NAME], full=True) == 0
    load_model(folder, verify=True)
    load_model("bundled")  # the shipped assets have no record and still load


def test_unreadable_record_is_a_one_line_error(folder: Path):
    for text, expected in (('{"files": []}', "not a checksum record this poseforge reads"),
                           ('{"format": "poseforge-checksums/9", "files": {}}', "poseforge-checksums/9"),
                           ("{truncated", "not valid JSON")):
        (folder / CHECKSUMS_NAME).write_text(text)
        with pytest.raises(PoseforgeError, match=expected) as info:
            load_model(folder)
        assert "\n" not in str(info.value) and str(info.value).endswith("or pass verify=False (--no-verify)")
        load_model(folder, verify=False)  # the record is not even read


def test_default_skips_hashing_files_over_the_limit_but_checks_their_size(folder: Path, monkeypatch, caplog):
    _flip_head_exponent(folder)  # same size, different bytes
    monkeypatch.setattr(loading, "VERIFY_MAX_BYTES", 1000)  # the weights are "huge", config.json is not
    with caplog.at_level(logging.DEBUG, logger="poseforge"):
        load_model(folder)  # verify=None: the weights' sha256 is skipped, with a debug line
    assert any("sha256 not checked" in r.getMessage() for r in caplog.records)
    with pytest.raises(PoseforgeError, match="does not match its checksum"):
        load_model(folder, verify=True)  # True hashes whatever the size
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(PoseforgeError, match="does not match its checksum"):
        load_model(folder)  # the size check costs nothing and runs for big files too


def test_single_safetensors_file_is_verified_by_its_folder_record(folder: Path):
    _flip_head_exponent(folder)
    with pytest.raises(PoseforgeError, match="does not match its checksum"):
        load_model(folder / WEIGHTS_NAME)


def test_cli_predict_with_corrupt_weights_exits_2_with_one_line(folder: Path, image: Path, tmp_path: Path, capsys):
    _flip_head_exponent(folder)
    rc = main(["predict", str(image), "--out", str(tmp_path / "out"), "--model", str(folder), "--detector", "none"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("poseforge predict: error: ") and "verify=False" in err
    assert not (tmp_path / "out" / "predictions.json").exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_cli_no_verify_skips_the_checksums(folder: Path, image: Path, tmp_path: Path, capsys, command: str):
    """--no-verify is the CLI's verify=False: the damaged-but-readable folder of the test above is used."""
    _flip_head_exponent(folder)
    if command == "predict":
        argv = ["predict", str(image), "--out", str(tmp_path / "out"), "--model", str(folder), "--detector", "none"]
        produced = tmp_path / "out" / "predictions.json"
    else:
        argv = ["export", str(folder), "--out", str(tmp_path / "model.onnx")]
        produced = tmp_path / "model.onnx"
        pytest.importorskip("onnx")
    assert main(argv) == 2 and "--no-verify" in capsys.readouterr().err
    assert main(argv + ["--no-verify"]) == 0, capsys.readouterr().err
    assert produced.is_file()


# ---------------------------------------------------------------------------------------------- non-finite outputs
NON_FINITE = r"produced non-finite outputs \(NaN/Inf\): corrupt weights or an input it cannot handle"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_topdown_predict_raises_on_non_finite_outputs(value: float):
    model = create_model("vitpose-tiny", input_size=SIZE).eval()
    crops = torch.randint(0, 255, (2, 3, SIZE[1], SIZE[0]), dtype=torch.uint8)
    frame = torch.randint(0, 255, (3, 100, 80), dtype=torch.uint8)
    model.predict(crops)  # finite weights: no error
    with torch.no_grad():
        model.head.final_layer.weight.view(-1)[0] = value  # one bad weight spreads to the outputs
    with pytest.raises(PoseforgeError, match=f"^vitpose-tiny {NON_FINITE}$"):
        model.predict(crops)  # crops path
    with pytest.raises(PoseforgeError, match=NON_FINITE):
        model.predict(frame, [[10, 10, 60, 90]], batch_size=1, flip_test=False)  # frames + boxes path, chunked


@pytest.mark.parametrize("name", ["stub-bottomup", "stub-dense"])
def test_bottomup_and_dense_predict_raise_on_non_finite_outputs(name: str):
    model = create_model(name).eval()
    frame = torch.randint(0, 255, (3, 100, 80), dtype=torch.uint8)
    model.predict(frame)
    _nan_head(model)
    with pytest.raises(PoseforgeError, match=f"^{name} {NON_FINITE}$"):
        model.predict(frame)


def test_predictor_and_cli_raise_on_nan_weights_saved_with_a_matching_record(tmp_path: Path, image: Path, capsys):
    model = create_model("vitpose-tiny", input_size=SIZE)
    _nan_head(model)
    model.save_pretrained(tmp_path / "nan")
    assert load_model(tmp_path / "nan", verify=True) is not None  # the file is intact: only the outputs tell
    with pytest.raises(PoseforgeError, match=NON_FINITE):
        Predictor(tmp_path / "nan", detector=None, device="cpu").predict(str(image))
    rc = main(["predict", str(image), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nan"), "--detector", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "non-finite outputs" in err


def test_flipped_bit_in_a_training_checkpoint_is_a_one_line_error(tmp_path: Path, capsys):
    """torch.load never checks the CRC-32 that torch.save writes per record: a flipped bit in last.pt would
    resume (or export) silently wrong weights. read_training_checkpoint checks them."""
    from poseforge.train.checkpoint import save_checkpoint

    model = create_model("stub-dense")
    path = save_checkpoint(tmp_path / "last.pt", {"model": model.state_dict(), "model_config": model.config.to_dict()})
    assert set(loading.read_training_checkpoint(path)) >= {"model", "model_config"}
    data = bytearray(path.read_bytes())
    name, tensor = max(model.state_dict().items(), key=lambda kv: kv[1].numel())
    offset = data.find(tensor.numpy().tobytes()[:64])
    assert offset > 0, name
    data[offset + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PoseforgeError, match="damaged checkpoint .* fails its checksum"):
        loading.read_training_checkpoint(path)
    assert main(["export", str(path), "--out", str(tmp_path / "exported")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged checkpoint" in err


@pytest.mark.parametrize("section, value, message", [
    (None, "no-such-kind", r"config\.json\.type: unknown model config 'no-such-kind'"),
    ("head", "no-such-head", r"config\.json\.head\.type: unknown head 'no-such-head'"),
])
def test_unknown_part_type_in_config_json_names_the_file_and_field(folder: Path, section, value, message):
    config = json.loads((folder / CONFIG_NAME).read_text())
    (config[section] if section else config)["type"] = value
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(PoseforgeError, match=message) as info:
        load_model(folder, verify=False)
    assert str(folder / CONFIG_NAME) in str(info.value)
