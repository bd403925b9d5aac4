"""Random Hugging Face VitPose models and their official-layout renaming for the conversion equality tests
(``transformers`` is a test extra)."""
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


def hf_to_official(state: dict[str, torch.Tensor], head_prefix: str = "keypoint_head.") -> dict[str, torch.Tensor]:
    """Rename a HF VitPose state dict (plain or MoE) to the ViTAE-Transformer/ViTPose (mmpose 0.x) layout:
    fused qkv, ``blocks.*``, ``last_norm``; the head under ``head_prefix`` (ViTPose++ extra heads:
    ``associate_keypoint_heads.{i}.``)."""
    out = {}
    for key, value in state.items():
        if ".attention.attention.key." in key or ".attention.attention.value." in key:
            continue
        new = (key.replace("backbone.embeddings.patch_embeddings.projection", "backbone.patch_embed.proj")
               .replace("backbone.embeddings.position_embeddings", "backbone.pos_embed")
               .replace("backbone.encoder.layer.", "backbone.blocks.")
               .replace(".layernorm_before.", ".norm1.").replace(".layernorm_after.", ".norm2.")
               .replace(".attention.output.dense.", ".attn.proj.")
               .replace("backbone.layernorm.", "backbone.last_norm.")
               .replace("head.deconv1.", head_prefix + "deconv_layers.0.").replace("head.batchnorm1.", head_prefix + "deconv_layers.1.")
               .replace("head.deconv2.", head_prefix + "deconv_layers.3.").replace("head.batchnorm2.", head_prefix + "deconv_layers.4.")
               .replace("head.conv.", head_prefix + "final_layer."))
        if ".attention.attention.query." in key:
            kind = key.rsplit(".", 1)[1]
            prefix = key.split(".attention.attention.")[0]
            value = torch.cat([state[f"{prefix}.attention.attention.{p}.{kind}"] for p in ("query", "key", "value")])
            new = new.replace(".attention.attention.query.", ".attn.qkv.")
        out[new] = value
    return out
