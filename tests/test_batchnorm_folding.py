"""BatchNorm folding (``prepare_for_inference(fuse_batchnorm=True)``, :func:`fold_batchnorms`): every convolution ->
BatchNorm pair of the bottom-up and deconvolution-head families folds, outputs stay, and what must not fold does
not (a Sequential subclass with its own forward, modules that opt out, BatchNorms without running statistics)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from poseforge.models import create_model
from poseforge.models.estimators.base import fold_batchnorms


def _informative_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affines away from their init, or folding would be trivially exact."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.2)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


@pytest.mark.parametrize("name, overrides, unfolded", [
    # LitePose: the three head BatchNorms normalize a sum of two deconvolutions, no single convolution's output
    ("litepose-xs", {"input_size": (64, 64), "depths": (1, 2, 1, 1)}, 3),
    ("higherhrnet-w32", {"input_size": (64, 64), "width": 8, "stem_width": 16, "stage_modules": (1, 1, 1),
                         "num_blocks": 1}, 0),
    ("vitpose-tiny", {}, 0),  # the classic head: deconvolution -> BatchNorm -> ReLU
])
def test_folded_models_keep_their_outputs(one_thread, name, overrides, unfolded):
    torch.manual_seed(0)
    model = _informative_statistics(create_model(name, **overrides).eval())
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    w, h = model.input_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
        folded = copy.deepcopy(model).prepare_for_inference(channels_last=False, fuse_batchnorm=True)
        out = folded(x)
    assert folded.inference_only
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == unfolded < before
    for field, value in reference.tensors().items():
        torch.testing.assert_close(out.tensors()[field], value, rtol=1e-4, atol=1e-5 * value.abs().max().item())


def test_fold_rules_and_what_stays():
    class Block(nn.Module):  # the torchvision / HRNet layout: bn<i> normalizes conv<i>
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6, affine=False)

        def forward(self, x):
            return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    class Doubling(nn.Sequential):  # a Sequential with a forward of its own: its children do not chain
        def forward(self, x):
            return self[1](x) + self[0](x)

    class Elastic(nn.Module):  # reads its BatchNorm's statistics itself: opts out
        batchnorm_folding = False

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6))

        def forward(self, x):
            bn = self.layers[1]
            return nn.functional.batch_norm(self.layers[0](x), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                            False, 0.0, bn.eps)

    shared = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6))  # depthwise, used twice
    net = nn.Sequential(
        Block(), shared, shared,
        nn.ConvTranspose2d(6, 8, 4, stride=2, padding=1, groups=2, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6, track_running_stats=False),  # batch statistics: nothing to fold
        Doubling(nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6)), Elastic()).eval()
    _informative_statistics(net)
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = net(x)
        assert fold_batchnorms(net) == 4  # bn1, bn2, the shared depthwise pair once, the grouped deconvolution
        torch.testing.assert_close(net(x), reference, rtol=1e-5, atol=1e-5)
    assert isinstance(net[0].bn1, nn.Identity) and isinstance(net[0].bn2, nn.Identity)
    assert isinstance(net[1][1], nn.Identity) and isinstance(net[4], nn.Identity) and net[3].bias is not None
    assert isinstance(net[7], nn.BatchNorm2d) and isinstance(net[8][1], nn.BatchNorm2d)
    assert isinstance(net[9].layers[1], nn.BatchNorm2d)
    assert fold_batchnorms(net) == 0  # nothing left to fold


def test_an_elastic_supernet_keeps_its_batchnorms(one_thread):
    """The once-for-all supernet slices its convolutions' weights and reads its BatchNorms' statistics itself:
    folding leaves its backbone and head whole, and it runs as before."""
    from poseforge.models import list_models

    if "litepose-supernet" not in list_models():
        pytest.skip("no litepose-supernet in the zoo")
    model = _informative_statistics(create_model("litepose-supernet", input_size=(64, 64)).eval())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(x)
        folded = copy.deepcopy(model)
        fold_batchnorms(folded)
        out = folded(x)
    for field, value in reference.tensors().items():
        torch.testing.assert_close(out.tensors()[field], value)
