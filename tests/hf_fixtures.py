"""Random Hugging Face VitPose models for the conversion equality tests (``transformers`` is a test extra)."""
from __future__ import annotations

import pytest
import torch


def random_hf_vitpose(seed: int, num_labels: int, image_size: tuple[int, int], **backbone_kwargs):
    """A ``VitPoseForPoseEstimation`` with random weights and BatchNorm statistics away from their
    defaults, so that a conversion which drops or swaps any tensor changes the outputs."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    simple = backbone_kwargs.pop("use_simple_decoder", False)
    backbone = transformers.VitPoseBackboneConfig(image_size=list(image_size), **backbone_kwargs)
    config = transformers.VitPoseConfig(backbone_config=backbone, use_simple_decoder=simple, num_labels=num_labels)
    model = transformers.VitPoseForPoseEstimation(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return model
