"""The training fast path: AdamW kernel selection and resume across kernels, activation checkpointing
policies, compile modes (config, and a compiled step that resumes exactly), the loader's wait time."""
from __future__ import annotations

import copy

import pytest
import torch

from poseforge.errors import PoseforgeError
from poseforge.models import create_model
from poseforge.train import OptimSection, Trainer, build_optimizer, load_config
from poseforge.train.activations import apply_activation_checkpointing, checkpoint_every
from poseforge.train.checkpoint import load_checkpoint
from poseforge.train.optim import adamw_implementation

from test_train_engine import tiny_config, train_losses


# ---------------------------------------------------------------------------------------------- AdamW kernel
def test_adamw_kernel_selection():
    assert adamw_implementation({"cuda"}) == {"fused": True, "foreach": False}
    assert adamw_implementation({"cpu"}) == {"fused": True, "foreach": False}  # torch has a fused CPU kernel
    assert adamw_implementation(set()) == {"fused": True, "foreach": False}  # no parameters: as on the CPU
    # a device type without fused or multi-tensor kernels falls back to the per-tensor loop
    assert adamw_implementation({"cpu", "meta"}) == {"fused": False, "foreach": False}
    assert adamw_implementation({"cuda"}, "foreach") == {"fused": False, "foreach": True}
    assert adamw_implementation({"cuda"}, "for_loop") == {"fused": False, "foreach": False}
    with pytest.raises(PoseforgeError, match="no fused AdamW for meta"):
        adamw_implementation({"meta"}, "fused")
    with pytest.raises(PoseforgeError, match="optim.implementation: expected one of"):
        adamw_implementation({"cpu"}, "apex")
    with pytest.raises(PoseforgeError, match="optim.implementation"):
        load_config("smoke", ["optim.implementation=apex"])


def _model_and_grads(seed: int = 0) -> tuple[torch.nn.Module, list[list[torch.Tensor]]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(5)]
    return model, grads


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads):
            p.grad = g.clone()
        optimizer.step()


@pytest.mark.parametrize("saved, resumed", [("fused", "for_loop"), ("for_loop", "fused"), ("fused", "fused")])
def test_optimizer_state_resumes_across_kernels(saved, resumed):
    reference, grads = _model_and_grads()
    ref_opt = build_optimizer(reference, OptimSection(lr=1e-2, implementation=saved))
    assert ref_opt.param_groups[0]["fused"] is (saved == "fused")
    _steps(reference, ref_opt, grads[:3])
    state = copy.deepcopy(ref_opt.state_dict())  # as read back from a checkpoint: no tensors shared with ref_opt
    model, _ = _model_and_grads()
    model.load_state_dict(reference.state_dict())
    opt = build_optimizer(model, OptimSection(lr=1e-2, implementation=resumed))
    opt.load_state_dict(state)
    # the resumed optimizer keeps its own kernel (the saved groups would have switched it) ...
    assert all(g["fused"] is (resumed == "fused") for g in opt.param_groups)
    steps = [s["step"] for s in opt.state.values()]
    assert all(s.dtype == torch.float32 and s.device.type == "cpu" and float(s) == 3 for s in steps)
    assert state["param_groups"][0]["fused"] is (saved == "fused")  # (the caller's dict is not modified)
    # ... and continues the same optimization: bitwise with the same kernel, to rounding across kernels
    _steps(reference, ref_opt, grads[3:])
    _steps(model, opt, grads[3:])
    for a, b in zip(reference.parameters(), model.parameters()):
        if saved == resumed:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- checkpointing
def test_activation_checkpointing_policies():
    small = dict(input_size=(48, 64), embed_dim=32, num_heads=2, head="simple")
    deep = create_model("vitpose-tiny", depth=24, **small)  # as deep as ViT-L, in narrow blocks
    shallow = create_model("vitpose-tiny", depth=12, **small)
    assert checkpoint_every(deep, "auto", "cuda") == 1 and checkpoint_every(deep, "auto", "cpu") == 0
    assert checkpoint_every(shallow, "auto", "cuda") == 0
    assert checkpoint_every(create_model("vitpose-tiny", grad_checkpointing=True, **small), "auto", "cpu") == 1
    assert checkpoint_every(shallow, "all", "cpu") == 1 and checkpoint_every(shallow, "every_3", "cpu") == 3
    assert checkpoint_every(deep, "none", "cuda") == 0
    cnn = create_model("rtmpose-t")
    assert checkpoint_every(cnn, "auto", "cuda") == 0
    with pytest.raises(PoseforgeError, match="no checkpointable blocks"):
        checkpoint_every(cnn, "all", "cpu")
    with pytest.raises(PoseforgeError, match="every_K"):
        checkpoint_every(shallow, "every_0", "cpu")
    with pytest.raises(PoseforgeError, match="activation_checkpointing: expected"):
        load_config("smoke", ["activation_checkpointing=sometimes"])


@pytest.mark.parametrize("policy, recomputed", [("all", 6), ("every_4", 2)])
def test_checkpointed_blocks_give_the_same_gradients(monkeypatch, policy, recomputed):
    import poseforge.models.backbones.vit as vit

    calls = []
    real = vit.checkpoint
    monkeypatch.setattr(vit, "checkpoint", lambda fn, *a, **k: calls.append(fn) or real(fn, *a, **k))
    x = torch.randn(2, 3, 64, 48)

    def gradients(policy: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the same weights, and the same drop-path draws in both runs
        model = create_model("vitpose-tiny", input_size=(48, 64), embed_dim=48, drop_path_rate=0.3).train()
        apply_activation_checkpointing(model, policy, "cpu")
        torch.manual_seed(1)
        model(x).heatmaps.square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain = gradients("none")
    assert not calls
    checkpointed = gradients(policy)
    assert len(calls) == recomputed  # blocks 0, k, 2k ... of the 6
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_trainer_applies_the_policy_and_counts_data_time(tmp_path):
    sets = ["val_interval=0", "max_steps=2", "model.overrides.drop_path_rate=0.2"]
    plain = Trainer(tiny_config(*sets), tmp_path / "plain", progress=False)
    plain.fit()  # (built and run one after the other: a Trainer seeds the global RNG that drop path draws from)
    ckpt = Trainer(tiny_config(*sets, "activation_checkpointing=every_2"), tmp_path / "ckpt", progress=False)
    ckpt.fit()
    assert plain.checkpoint_every == 0 and ckpt.checkpoint_every == 2 and ckpt.estimator.backbone.grad_checkpointing == 2
    assert all(g["fused"] for g in plain.optimizer.param_groups)  # the auto kernel on the CPU
    a, b = train_losses(tmp_path / "plain"), train_losses(tmp_path / "ckpt")
    assert a.keys() == b.keys() == {1, 2} and all(a[k] == pytest.approx(b[k], rel=1e-6) for k in a)
    assert plain.data_seconds > 0  # the loop timed its waits for batches


# ---------------------------------------------------------------------------------------------- compile
def test_compile_modes_in_the_config():
    assert tiny_config().compile == "none"
    assert tiny_config("compile=true").compile == "model" and tiny_config("compile=false").compile == "none"
    assert tiny_config("compile=step").compile == "step"
    assert tiny_config("compile=true") == tiny_config("compile=model")  # one spelling per mode
    assert load_config("synth-cpu").compile == "model"
    with pytest.raises(PoseforgeError, match="compile: expected one of none, model, step"):
        tiny_config("compile=everything")


@pytest.mark.slow  # Inductor compiles forward + backward of the step: ~10 s with a warm cache, ~90 s cold
def test_compiled_step_trains_like_eager_and_resumes_exactly(tmp_path):
    sets = ["val_interval=0", "schedule.epochs=1", "model.overrides.drop_path_rate=0.2"]
    eager = tmp_path / "eager"
    Trainer(tiny_config(*sets), eager, progress=False).fit()
    full = tmp_path / "full"
    trainer = Trainer(tiny_config(*sets, "compile=step"), full, progress=False)
    trainer.fit()
    assert trainer._loss_of.is_compiled
    part = tmp_path / "part"
    Trainer(tiny_config(*sets, "compile=step", "max_steps=2"), part, progress=False).fit()
    Trainer(tiny_config(*sets, "compile=step"), part, resume=True, progress=False).fit()
    assert train_losses(part) == train_losses(full)  # bitwise, as the eager trainer resumes
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(part / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, le = train_losses(full), train_losses(eager)  # Inductor's kernels round differently from eager's
    assert la.keys() == le.keys() and all(la[k] == pytest.approx(le[k], rel=1e-4) for k in la)


# ---------------------------------------------------------------------------------------------- JPEG bytes
def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF segment (big-endian TIFF, one IFD0 entry: Orientation) after its SOI."""
    tiff = b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
    tiff += (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
    tiff += orientation.to_bytes(2, "big") + b"\x00\x00" + (0).to_bytes(4, "big")
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_workers_pass_jpeg_bytes_unless_exif_turns_them(tmp_path):
    import cv2
    import numpy as np

    from poseforge.train.data import _exif_orientation, _file_tensor

    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    plain = cv2.imencode(".jpg", pixels)[1].tobytes()
    files = {"plain.jpg": plain, "turned.jpg": _with_exif_orientation(plain, 6),
             "upright.jpg": _with_exif_orientation(plain, 1), "image.png": cv2.imencode(".png", pixels)[1].tobytes()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert _exif_orientation(plain) == 0 and _exif_orientation(files["turned.jpg"]) == 6
    assert _exif_orientation(files["upright.jpg"]) == 1
    for name in ("plain.jpg", "upright.jpg"):  # bytes, for nvJPEG
        out = _file_tensor(str(tmp_path / name))
        assert out.ndim == 1 and bytes(out.numpy()) == files[name]
    turned = _file_tensor(str(tmp_path / "turned.jpg"))  # OpenCV applies the rotation nvJPEG would miss
    assert turned.shape == (3, 30, 20)
    assert _file_tensor(str(tmp_path / "image.png")).shape == (3, 20, 30)
    with pytest.raises(PoseforgeError, match="image file not found"):
        _file_tensor(str(tmp_path / "missing.jpg"))


def test_jpeg_decoder_choice_on_cpu():
    from poseforge.train.data import jpeg_decoder

    assert jpeg_decoder("cpu") is None and jpeg_decoder("cpu", "opencv") is None
    with pytest.raises(PoseforgeError, match="data.decode=nvjpeg needs CUDA"):
        jpeg_decoder("cpu", "nvjpeg")
    with pytest.raises(PoseforgeError, match="data.decode: expected"):
        jpeg_decoder("cpu", "pillow")
    with pytest.raises(PoseforgeError, match="data.decode"):
        load_config("smoke", ["data.decode=pillow"])


def test_batches_of_jpeg_bytes_equal_batches_of_pixels(peer_data, caplog, monkeypatch):
    """The nvJPEG path's plumbing (bytes through the workers, one batched decode, then the GPU crops) on
    the CPU, with OpenCV standing in for nvJPEG: the same batch as decoding in the workers."""
    import numpy as np

    from poseforge.data.images import decode_image_bytes
    from poseforge.data.transforms import TopDownTransform
    import poseforge.train.data as data
    from poseforge.train.data import CocoSource, TrainSamples, collate_raw, gpu_batch

    monkeypatch.setattr(data, "_NVJPEG_FAILED", False)  # (the warning is logged once per process)
    source = CocoSource(peer_data / "coco/test_coco.json")
    transform = TopDownTransform((48, 64), "coco17")
    keys = [(0, p, i) for p, i in enumerate(range(len(source)))]
    pixels = collate_raw(TrainSamples(source, [transform], 0, raw=True).__getitems__(keys))
    encoded = collate_raw(TrainSamples(source, [transform], 0, raw=True, encoded=True).__getitems__(keys))
    assert all(im.ndim == 1 for im in encoded.images)  # the test images are upright JPEGs
    calls = []

    def batched(data):
        calls.append(len(data))
        return [torch.from_numpy(np.ascontiguousarray(decode_image_bytes(d.numpy()).transpose(2, 0, 1))) for d in data]

    def broken(data):
        raise RuntimeError("nvjpeg: unsupported JPEG (CMYK)")

    reference = gpu_batch(pixels, transform, torch.device("cpu"))
    for decode in (batched, None, broken):  # nvJPEG's stand-in; no decoder; a failing decoder: OpenCV
        batch = gpu_batch(encoded, transform, torch.device("cpu"), decode=decode)
        assert torch.equal(batch.image, reference.image) and torch.equal(batch.keypoints, reference.keypoints)
    assert calls == [len(source)]  # one call for the whole batch
    assert any("decoding it with OpenCV" in r.message for r in caplog.records)
