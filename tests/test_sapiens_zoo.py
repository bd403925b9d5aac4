"""Sapiens zoo: published shapes, the dense head and the pose head's extra convolutions."""
from __future__ import annotations

import pytest
import torch

from poseforge import create_model, list_models
from poseforge.errors import PoseforgeError
from poseforge.models.backbones.vit import VisionTransformer
from poseforge.models.heads.dense import SapiensDenseHeadConfig
from poseforge.models.zoo import SAPIENS_BACKBONES, model_config
from poseforge.outputs import DenseMaps

SIZES = ("0.3b", "0.6b", "1b", "2b")
# facebookresearch/sapiens mmpretrain ``arch_zoo``: (embed_dims, num_layers, num_heads).
PUBLISHED_SHAPES = {"0.3b": (1024, 24, 16), "0.6b": (1280, 32, 16), "1b": (1536, 40, 24), "2b": (1920, 48, 32)}


def test_every_size_and_task_is_registered():
    names = set(list_models("sapiens-*"))
    for size in (*SIZES, "tiny"):
        for task in ("pose", "pose-coco", "pose-wholebody", "seg", "depth", "normal"):
            assert f"sapiens-{size}-{task}" in names


@pytest.mark.parametrize("size", SIZES)
def test_published_backbone_shapes_and_native_grid(size):
    config = SAPIENS_BACKBONES[size]
    assert (config.embed_dim, config.depth, config.num_heads) == PUBLISHED_SHAPES[size]
    assert config.hidden_dim == 4 * config.embed_dim
    pose = model_config(f"sapiens-{size}-pose-coco")
    seg = model_config(f"sapiens-{size}-seg")
    assert pose.input_size == seg.input_size == (768, 1024)
    assert pose.backbone.patch_padding == 2 and seg.backbone.patch_padding == 0  # as the official configs
    assert model_config(f"sapiens-{size}-normal").backbone.patch_padding == 2
    with torch.device("meta"):  # nothing this size is materialized
        backbone = VisionTransformer(pose.backbone, input_size=pose.input_size)
    assert tuple(backbone.pos_embed.shape) == (1, 64 * 48, config.embed_dim)
    assert pose.codec["heatmap_size"] == [192, 256] and pose.codec["sigma"] == 6.0


def test_pose_head_has_mmpose_conv_layers():
    model = create_model("sapiens-tiny-pose-coco")
    keys = set(model.head.state_dict())
    assert {"conv_layers.0.weight", "conv_layers.0.bias", "conv_layers.1.running_var", "final_layer.weight"} <= keys
    assert model(torch.zeros(1, 3, 256, 192)).heatmaps.shape == (1, 17, 64, 48)
    published = model_config("sapiens-0.3b-pose-coco").head
    assert published.deconv_channels == (768, 768) and published.conv_channels == (768, 768)
    assert published.conv_kernel_sizes == (1, 1)


@pytest.mark.parametrize("task,field,channels,stride", [("seg", "seg", 28, 4), ("depth", "depth", 1, 4),
                                                         ("normal", "normals", 3, 4)])
def test_tiny_dense_models(task, field, channels, stride):
    model = create_model(f"sapiens-tiny-{task}").eval()
    out = model(torch.randn(2, 3, 256, 192))
    assert isinstance(out, DenseMaps)
    assert getattr(out, field).shape == (2, channels, 256 // stride, 192 // stride)
    assert [f for f in ("seg", "depth", "normals") if getattr(out, f) is not None] == [field]
    # the instance norms carry no weights: only convolutions (as the official heads' state dicts)
    assert all(k.split(".")[0] in ("deconv_layers", "conv_layers", f"{'normal' if field == 'normals' else field}_layer")
               for k in model.head.state_dict())


def test_published_dense_heads():
    seg, depth, normal = (model_config(f"sapiens-1b-{t}").head for t in ("seg", "depth", "normal"))
    assert seg.deconv_channels == (768,) * 3 and seg.conv_channels == (768,) * 3
    assert depth.deconv_channels == (384,) * 4 and depth.conv_channels == (384,) * 2
    assert normal.deconv_channels == (768,) * 3 and normal.upsampling == 8 and depth.upsampling == 16
    assert model_config("sapiens-1b-seg").codec["num_classes"] == 28


def test_fresh_depth_model_predicts_positive_depth():
    model = create_model("sapiens-tiny-depth").eval()
    with torch.no_grad():
        depth = model(torch.randn(1, 3, 256, 192)).depth
    assert (depth > 0).all()  # the log loss clamps non-positive depth and would give it no gradient


def test_multi_task_dense_head_and_mismatch_errors():
    config = model_config("sapiens-tiny-seg")
    both = config.replace(head=config.head.replace(tasks=("seg", "normals")),
                          codec={**config.codec, "normals": True})
    from poseforge.models import build_model

    out = build_model(both)(torch.randn(1, 3, 256, 192))
    assert out.seg.shape[1] == 28 and out.normals.shape[1] == 3
    with pytest.raises(PoseforgeError, match="head predicts"):
        config.replace(head=config.head.replace(tasks=("seg", "depth")))
    with pytest.raises(PoseforgeError, match="order"):
        SapiensDenseHeadConfig(tasks=("normals", "seg"))
    with pytest.raises(PoseforgeError, match="distinct tasks"):
        SapiensDenseHeadConfig(tasks=("albedo",))
    with pytest.raises(PoseforgeError, match="deconv_kernel_sizes"):
        SapiensDenseHeadConfig(deconv_kernel_sizes=(5, 4, 4))


def test_loading_a_dense_model_first_leaves_the_renderer_usable(tmp_path):
    """A dense model's load imports the renderer inside the meta-device build: its colour tables must stay real."""
    import subprocess
    import sys

    create_model("sapiens-tiny-seg").save_pretrained(tmp_path / "seg")
    code = (f"from poseforge.models import load_model; load_model({str(tmp_path / 'seg')!r}); "
            "from poseforge.data.synth import SyntheticPoseDataset; "
            "image = SyntheticPoseDataset(1, image_size=(64, 96), people=1)[0]; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """A sapiens-tiny model predicting parts, depth and normals (random weights), saved as a model folder."""
    from poseforge.models import build_model

    config = model_config("sapiens-tiny-seg")
    config = config.replace(head=config.head.replace(tasks=("seg", "depth", "normals")),
                            codec={**config.codec, "depth": True, "normals": True})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dense") / "model"
    build_model(config).save_pretrained(folder)
    return folder


def test_predictor_draws_each_dense_task(dense_run):
    import numpy as np

    from poseforge.inference.predictor import Predictor

    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    result = Predictor(str(dense_run), detector=None, device="cpu").predict(image)
    assert result.dense_tasks == ("seg", "depth", "normal")
    assert result.dense["seg"].shape == (120, 90) and result.dense["normals"].shape == (120, 90, 3)
    seg = result.draw(task="seg")
    assert seg.shape == (120, 90, 3)
    for task in ("depth", "normal"):  # the image beside its map, coloured on the predicted person pixels only
        drawn = result.draw(task=task)
        assert drawn.shape == (120, 180, 3)
        assert (drawn[:, :90] == image).all()
        background = result.dense["seg"] == 0
        assert (drawn[:, 90:][background] == 0).all()
    with pytest.raises(PoseforgeError, match="no 'pose' map"):
        result.draw(task="pose")


def test_predict_cli_writes_dense_maps_and_refuses_missing_task(dense_run, tmp_path):
    import numpy as np
    import cv2

    from poseforge.cli import main

    image = (np.random.default_rng(1).random((100, 80, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "person.png"), image)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "person.png"), "--model", str(dense_run), "--out", str(out), "--task", "normal",
                 "--device", "cpu"]) == 0
    assert (out / "person.png.normal.jpg").is_file()
    maps = np.load(out / "person.png.dense.npz")
    assert set(maps.files) == {"seg", "depth", "normals"} and maps["seg"].shape == (100, 80)
    # a second run refuses to replace the dense outputs without --force
    assert main(["predict", str(tmp_path / "person.png"), "--model", str(dense_run), "--out", str(out), "--task",
                 "depth", "--device", "cpu"]) != 0
    seg_only = tmp_path / "seg"
    create_model("sapiens-tiny-seg").save_pretrained(seg_only)
    assert main(["predict", str(tmp_path / "person.png"), "--model", str(seg_only), "--out", str(tmp_path / "o2"),
                 "--task", "depth", "--device", "cpu"]) != 0
    assert not (tmp_path / "o2" / "person.png.depth.jpg").exists()


def test_segmentation_class_weights():
    from poseforge.data.synth.classes import SAPIENS_PART_CLASS_WEIGHTS
    from poseforge.models.losses import LossConfig, build_loss
    from poseforge.train.presets import get_preset

    assert len(SAPIENS_PART_CLASS_WEIGHTS) == 28 and SAPIENS_PART_CLASS_WEIGHTS[0] == 0.1
    assert get_preset("sapiens-tiny-seg-synth").loss.class_weights == SAPIENS_PART_CLASS_WEIGHTS
    assert get_preset("sapiens-tiny-depth-synth").loss.class_weights == ()
    torch.manual_seed(0)
    logits = torch.randn(2, 28, 8, 6)
    labels = torch.randint(0, 28, (2, 8, 6))
    targets = {"seg": labels}
    plain = build_loss("dense", LossConfig())(DenseMaps(seg=logits), targets)
    weighted = build_loss("dense", LossConfig(class_weights=SAPIENS_PART_CLASS_WEIGHTS))(DenseMaps(seg=logits), targets)
    w = torch.tensor(SAPIENS_PART_CLASS_WEIGHTS)
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(weighted, (per_pixel * w[labels]).sum() / w[labels].sum())
    assert not torch.allclose(plain, weighted)
    with pytest.raises(PoseforgeError, match="3 class_weights for 28"):
        build_loss("dense", LossConfig(class_weights=(1.0, 2.0, 3.0)))(DenseMaps(seg=logits), targets)


@pytest.mark.parametrize("task,metric", [("seg", "mIoU"), ("normal", "normal_mean")])
def test_sapiens_tiny_preset_trains_and_scores(task, metric, tmp_path):
    import json

    from poseforge.cli import main

    out = tmp_path / task
    assert main(["train", "--config", f"sapiens-tiny-{task}-synth", "--out", str(out), "--set", "schedule.epochs=1",
                 "--set", "schedule.steps_per_epoch=2", "--set", "data.synthetic.train_images=32",
                 "--set", "data.synthetic.val_images=8", "--set", "data.num_workers=0"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in rows if metric in json.dumps(r)]
    assert scored, rows[-1]


# The Sapiens paper's encoder table (arXiv 2408.12569): parameters of each pretraining model, in billions.
PUBLISHED_PARAMS = {"0.3b": 0.336, "0.6b": 0.664, "1b": 1.169, "2b": 2.163}


@pytest.mark.parametrize("size", SIZES)
def test_parameter_counts_equal_the_published(size):
    """Built on the meta device (nothing that size is materialized). The published figure counts the MAE
    pretraining model of the official code: the encoder at 1024x1024 plus its class token and class position,
    and the 512-wide 8-block decoder plus its fixed sine-cosine positions for 1 + 64 x 64 tokens, which the
    official decoder keeps as a (frozen) parameter and poseforge as a buffer."""
    from poseforge.models import build_model

    with torch.device("meta"):
        mae = build_model(model_config(f"sapiens-{size}-mae"))
        pose = build_model(model_config(f"sapiens-{size}-pose"))
    dim = SAPIENS_BACKBONES[size].embed_dim
    ours = sum(p.numel() for p in mae.parameters())
    official_extras = 2 * dim + (1 + 64 * 64) * 512
    assert round((ours + official_extras) / 1e9, 3) == PUBLISHED_PARAMS[size]
    assert mae.backbone.pos_embed.shape[1] == 64 * 64
    # the model names: 0.3 / 0.6 / 1 / 2 billion in the backbone the task models fine-tune
    backbone = sum(p.numel() for p in pose.backbone.parameters()) / 1e9
    assert round(backbone, 1 if backbone < 1 else 0) == float(size.removesuffix("b"))
