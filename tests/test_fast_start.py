"""CPU start-up (issue 32): a model loaded from stored weights runs no weight initializer, a fresh model is
initialized exactly as before, the Predictor path imports nothing it does not use (torch._dynamo above all:
an initializer on the meta device imported it, seconds), and the CPU thread defaults are the documented ones.

Timing itself is benchmarks/predictor_start.py's job; these tests check the causes, which do not depend on
how busy the machine is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from poseforge.device import OMP_WAIT_POLICY_DEFAULT, prefer_sleeping_threads, set_cpu_threads
from poseforge.errors import PoseforgeError
from poseforge.models import create_model, load_model
from poseforge.models.loading import model_from_state_dict, skip_meta_init

ROOT = Path(__file__).resolve().parents[1]

# Weight initializers: the torch.nn.init functions and the in-place tensor methods they and the modules'
# reset_parameters call (random draws and fills).
INIT_CALLS = {"normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
              "xavier_normal_", "constant_", "ones_", "zeros_", "orthogonal_", "random_", "bernoulli_",
              "exponential_", "erfinv_", "fill_", "zero_"}


class CallRecorder(TorchFunctionMode):
    """Records the name of every torch function and tensor method called (on any device, meta included)
    that reaches it. Entered outside ``load_model``, it sees what ``skip_meta_init`` lets through. (A
    dispatch-level recorder would see the same here, but entering one imports torch._dynamo: seconds.)"""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def init_calls(fn):
    """``(fn's result, the initializers it called)``."""
    with CallRecorder() as recorder:
        result = fn()
    return result, sorted(name for name in set(recorder.calls) if name in INIT_CALLS)


# Small members of two families (the same modules, fewer and smaller): RTMPose's CSPNeXt + RTMCC head with
# its GAU, and a ViT with the heatmap head's deconvolutions.
SMALL = {"rtmpose-t": {"input_size": (64, 64)}, "vitpose-tiny": {"input_size": (64, 64), "depth": 2}}


@pytest.fixture(scope="module", params=sorted(SMALL))
def saved(request, tmp_path_factory):
    """A fresh model and the folder ``save_pretrained`` wrote for it."""
    torch.manual_seed(0)
    model = create_model(request.param, **SMALL[request.param]).eval()
    return model, model.save_pretrained(tmp_path_factory.mktemp(request.param))


def test_loading_a_saved_model_runs_no_initializer(saved):
    model, folder = saved
    loaded, calls = init_calls(lambda: load_model(folder))
    assert calls == [], f"load_model ran the initializers {calls} (the stored weights replace them)"
    # the recorder sees initializers where they run: building the same model fresh calls them
    _, fresh_calls = init_calls(lambda: create_model(model.config.name, **SMALL[model.config.name]))
    assert {"normal_", "kaiming_uniform_"} <= set(fresh_calls), fresh_calls


def test_loaded_model_equals_the_saved_one(saved):
    model, folder = saved
    loaded = load_model(folder)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    # the buffers no checkpoint holds (normalization, flip index, joint weights) are computed from the config
    buffers, loaded_buffers = dict(model.named_buffers()), dict(loaded.named_buffers())
    assert buffers.keys() == loaded_buffers.keys()
    assert all(torch.equal(buffers[k], loaded_buffers[k]) for k in buffers)
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))
    w, h = model.config.input_size
    images = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(images), loaded(images)
    for name in ("heatmaps", "simcc_x", "simcc_y"):
        if hasattr(expected, name):
            assert torch.equal(getattr(expected, name), getattr(got, name)), name


def test_model_from_state_dict_builds_without_initializers():
    """The converters' and mergers' entry point: the same meta build, no initializer run."""
    torch.manual_seed(0)
    model = create_model("rtmpose-t", **SMALL["rtmpose-t"])
    rebuilt, calls = init_calls(lambda: model_from_state_dict(model.config, model.state_dict(), "test"))
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()))


def test_create_model_still_initializes_deterministically():
    torch.manual_seed(3)
    a = create_model("rtmpose-t", **SMALL["rtmpose-t"])
    torch.manual_seed(3)
    b = create_model("rtmpose-t", **SMALL["rtmpose-t"])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    head = a.head
    # mmpose's RTMCC initialization: normal(0.001) keypoint convolution, normal(0.01) classifiers, GAU
    # scale/offset uniform in [0, 1): real draws, not left empty or zero
    assert 0.0005 < head.final_layer.weight.std().item() < 0.002
    assert 0.005 < head.cls_x.weight.std().item() < 0.02
    assert 0.0 <= head.gau.gamma.min().item() and head.gau.gamma.max().item() < 1.0 and head.gau.gamma.std() > 0.1


def test_skip_meta_init_skips_meta_tensors_only():
    meta = torch.empty(4, 4, device="meta")
    cpu = torch.zeros(4, 4)
    with skip_meta_init():
        assert torch.nn.init.normal_(meta) is meta
        assert torch.nn.init.trunc_normal_(meta, std=0.02) is meta
        assert meta.uniform_() is meta
        torch.manual_seed(0)
        torch.nn.init.normal_(cpu)
    expected = torch.zeros(4, 4)
    torch.manual_seed(0)
    torch.nn.init.normal_(expected)
    assert torch.equal(cpu, expected) and cpu.std() > 0.1
    # the mode is gone afterwards: initializers of meta tensors run again
    _, calls = init_calls(lambda: meta.uniform_())
    assert calls == ["uniform_"]


def test_set_cpu_threads():
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(None) == before  # None keeps torch's setting
        assert set_cpu_threads(1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(PoseforgeError, match="num_threads"):
            set_cpu_threads(bad)


def test_prefer_sleeping_threads(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prefer_sleeping_threads() is False  # torch is loaded (by this test module) without the policy
    assert "OMP_WAIT_POLICY" not in os.environ  # ... and then it is not set: it could not take effect
    monkeypatch.delitem(sys.modules, "torch")  # as before torch loads
    assert prefer_sleeping_threads() is True and os.environ["OMP_WAIT_POLICY"] == OMP_WAIT_POLICY_DEFAULT
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the environment's choice wins
    assert prefer_sleeping_threads() is False and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


_CHILD = """
import json, os, sys
from poseforge import Predictor                     # before torch, as the docs say
policy = os.environ.get("OMP_WAIT_POLICY")
import numpy as np, torch
people = []
for model in ("bundled", "rtmpose-t.synth"):  # ViT + SimCC head; CSPNeXt (BatchNorms folded) + RTMCC head
    predictor = Predictor(model, detector="bundled", device="cpu", num_threads=1)
    people.append(len(predictor(np.full((240, 320, 3), 120, np.uint8), boxes=[[40, 20, 200, 230]])))
print(json.dumps({"policy": policy, "people": people, "threads": torch.get_num_threads(),
                  "loaded": [m for m in ("torch._dynamo", "sympy", "cv2", "poseforge.evaluation",
                                         "poseforge.data.synth", "poseforge.inference.video") if m in sys.modules]}))
"""


def test_predictor_start_imports_only_what_it_uses():
    """A fresh process: the predictor sets the sleeping-threads default before torch loads, and building
    Predictors and predicting imports no torch._dynamo or sympy (the seconds an initializer or a factory
    on the meta device cost), no OpenCV, evaluation, synthetic renderer or video I/O."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"policy": OMP_WAIT_POLICY_DEFAULT, "people": [1, 1], "threads": 1, "loaded": []}, out
