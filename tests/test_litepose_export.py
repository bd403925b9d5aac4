"""LitePose through ONNX: the export's raw outputs (heatmaps, tags, 1/2-scale heatmaps) and metadata, and the
torch-free runtime pipeline finding the same people as the torch model's ``predict``.

A tiny LitePose (narrow, one block per stage) keeps the export fast. Its head's outputs, scaled down, are added to
structured maps of a few people (Gaussians of random heights, 3x3 tag patches with noise, missing keypoints), so
the graph holds the real network while the maps both decoders group are clear; the image still moves the maps a
little through the network, differently in onnxruntime and torch only by rounding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import poseforge
from poseforge.codecs import create_codec
from poseforge.outputs import HeatmapsTags

pytest.importorskip("onnxruntime")

INPUT = (96, 128)  # (w, h): 1/4-scale maps 24 x 32, 1/2-scale 48 x 64
TINY = {"input_size": INPUT, "widths": (8, 8, 16, 16), "depths": (1, 1, 1, 1), "stem_channels": 8, "stem_hidden": 8,
        "expand_ratios": (2.0, 2.0, 2.0, 2.0), "deconv_channels": (8, 8, 8)}


class _StructuredHead(nn.Module):
    """The LitePose head with fixed maps added to its outputs scaled by 1e-3 (see the module doc)."""

    def __init__(self, head: nn.Module, maps: HeatmapsTags) -> None:
        super().__init__()
        self.head = head
        for name, value in maps.tensors().items():
            self.register_buffer(f"fixed_{name}", value)

    def forward(self, features):
        out = self.head(features)
        return HeatmapsTags(heatmaps=out.heatmaps * 1e-3 + self.fixed_heatmaps,
                            tags=out.tags * 1e-3 + self.fixed_tags,
                            heatmaps_hr=out.heatmaps_hr * 1e-3 + self.fixed_heatmaps_hr)


def _people_maps(codec, k: int, people: int, seed: int) -> HeatmapsTags:
    """Maps of ``people`` people: same-type keypoints >= 3 cells apart (own peaks), ~20% missing."""
    rng = np.random.default_rng(seed)
    w, h = INPUT
    kp = np.zeros((1, people, k, 2))
    for n in range(people):
        for j in range(k):
            while True:
                p = rng.uniform([6, 6], [w - 7, h - 7])
                if n == 0 or np.abs(np.floor((kp[0, :n, j] + 0.5) / 4) - np.floor((p + 0.5) / 4)).max(-1).min() >= 3:
                    break
            kp[0, n, j] = p
    vis = rng.random((1, people, k)) > 0.2
    vis[..., 0] = True
    batch = {"keypoints": torch.tensor(kp, dtype=torch.float32), "visibility": torch.tensor(vis, dtype=torch.float32),
             "valid": torch.ones(1, people, dtype=torch.bool)}
    heights = torch.tensor(rng.uniform(0.4, 1.0, (people, k)), dtype=torch.float32)[..., None, None]
    heat = hr = 0
    for n in range(people):  # each person's Gaussians at their own heights, the maximum where they overlap
        one = codec.encode({key: v[:, n:n + 1] for key, v in batch.items()})
        heat = torch.maximum(torch.as_tensor(heat), one["heatmaps"] * heights[n])
        hr = torch.maximum(torch.as_tensor(hr), one["heatmaps_hr"] * heights[n])
    t = codec.encode(batch)
    gw, gh = codec.heatmap_size
    tags = torch.tensor(rng.normal(0, 0.15, (1, k, gh, gw)), dtype=torch.float32)
    values = rng.permutation(3 * people)[:people] * 1.7
    for _, n, j in t["keypoint_weights"].nonzero().tolist():
        y, x = divmod(int(t["keypoint_indices"][0, n, j]), gw)
        tags[0, j, max(0, y - 1):y + 2, max(0, x - 1):x + 2] += values[n]
    return HeatmapsTags(heat, tags, heatmaps_hr=hr)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from poseforge.export.onnx import export_onnx

    torch.manual_seed(0)
    model = poseforge.create_model("litepose-xs", **TINY).eval()
    k = model.keypoint_set.num_keypoints
    model.head = _StructuredHead(model.head, _people_maps(model.codec, k, people=4, seed=1))
    path = export_onnx(model, tmp_path_factory.mktemp("litepose") / "litepose.onnx", batch_size=1)
    return model, path


def test_litepose_exports_raw_outputs_with_bottomup_metadata(exported, one_thread):
    from poseforge.export.onnx import check_onnx_parity, onnx_output_shapes, read_onnx_metadata

    model, path = exported
    meta = read_onnx_metadata(path)
    k = model.keypoint_set.num_keypoints
    assert meta["kind"] == "bottomup" and meta["outputs"] == ["heatmaps", "tags", "heatmaps_hr"]
    assert meta["codec"] == model.codec.config() and meta["codec"]["hr_heatmaps"] is True
    assert onnx_output_shapes(path) == {"heatmaps": [1, k, 32, 24], "tags": [1, k, 32, 24],
                                        "heatmaps_hr": [1, k, 64, 48]}
    # the export folds the BatchNorms (conv -> BN in Sequentials, deconvolution -> BN) and stays the same network
    assert all(diff < 1e-5 for diff in check_onnx_parity(model, path).values())


def test_runtime_pipeline_finds_the_people_of_the_torch_model(exported, one_thread):
    from poseforge.runtime import BottomUpPipeline
    from poseforge.runtime.decode import grouping_options

    model, path = exported
    frame = np.random.default_rng(2).integers(0, 256, (110, 150, 3), dtype=np.uint8)  # wider than the input
    pred = model.predict([torch.from_numpy(frame).permute(2, 0, 1)], flip_test=False)
    pipeline = BottomUpPipeline(path, min_keypoints=0)
    assert pipeline.options == grouping_options(model.codec.config())  # the codec's settings, from the metadata
    assert pipeline.options["nms_kernel"] == 5 and pipeline.options["refine"] and pipeline.options["adjust"]
    result = pipeline(frame, rgb=True)
    valid = pred.valid[0].numpy()
    assert len(result) == valid.sum() == 4
    # same people, same order (best first), same keypoints: grouped, adjusted and filled alike
    np.testing.assert_allclose(result.keypoints, pred.keypoints[0][valid].numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(result.scores, pred.scores[0][valid].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(result.box_scores, pred.instance_scores[0][valid].numpy(), rtol=0, atol=1e-4)
    # the filling step ran: without it some keypoints of these people are missing
    x, _ = pipeline.prepare(frame, rgb=True)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x))
    grouped = create_codec(**{**model.codec.config(), "refine": False}).decode_predictions(outputs)
    assert (grouped.scores[0][grouped.valid[0]] == 0).sum() > 0 and (result.scores > 0).all()
