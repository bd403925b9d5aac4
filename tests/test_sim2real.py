"""Issue 31's sim-to-real options: photo backgrounds/textures in the renderer and the camera augmentation.

Both are off by default (the golden renders in test_synth_golden.py and every recipe stay as they were);
on, they change pixels only, never labels.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from poseforge.data.augment import (AugmentConfig, Photometric, RandomGaussianBlur, RandomJPEG, RandomMotionBlur,
                                    jpeg_roundtrip)
from poseforge.data.synth import SyntheticPoseDataset
from poseforge.data.synth import photos as photos_mod
from poseforge.errors import PoseforgeError

have_photos = pytest.mark.skipif(photos_mod._package_dir("skimage") is None or photos_mod._package_dir("sklearn") is None,
                                 reason="scikit-image and scikit-learn (pip install poseforge[sim2real]) not installed")

CROPS = dict(seed=11, image_size=(96, 128), people=(1, 1))
SCENES = dict(seed=4, image_size=(160, 120), people=(1, 3))
LABELS = ("parts", "depth", "normals", "instance", "present", "category", "keypoints", "visibility", "keypoints_cam",
          "bbox", "area", "camera")


def _render(options: dict, indices: list[int], p: float = 0.0):
    return SyntheticPoseDataset(32, photo_backgrounds=p, **options).render_tensors(indices)


# ------------------------------------------------------------------------------------------ photo backgrounds


def test_photo_option_off_renders_exactly_as_without_it():
    a = SyntheticPoseDataset(8, **CROPS).render_tensors([0, 1, 2])
    b = _render(CROPS, [0, 1, 2], 0.0)
    assert torch.equal(a.image, b.image)


@have_photos
@pytest.mark.parametrize("options", [CROPS, SCENES], ids=["crops", "scenes"])
def test_photos_change_background_pixels_but_no_label(options):
    indices = list(range(6))
    off = _render(options, indices)
    on = _render(options, indices, 1.0)
    for name in LABELS:
        assert torch.equal(getattr(off, name), getattr(on, name)), name
    background = off.instance == 0
    changed = (off.image != on.image).any(-1)
    # p = 1: every image gets a photo backdrop, so most background pixels differ in every image.
    per_image = (changed & background).sum((1, 2)).float() / background.sum((1, 2)).clamp(min=1)
    assert bool((per_image > 0.5).all()), per_image
    # People are drawn in front of the photo: their pixels keep their colour (edges are anti-aliased
    # against the new background and some images are blurred, so only pixels 2 px inside are compared).
    inner = (off.instance > 0).float()[:, None]
    inner = -torch.nn.functional.max_pool2d(-inner, 5, stride=1, padding=2)[:, 0] > 0.5  # eroded by 2 px
    same = (off.image == on.image).all(-1)
    assert bool(inner.any()) and bool(same[inner].all())


@have_photos
def test_photo_renders_are_deterministic_and_independent_of_batching():
    a = _render(SCENES, [0, 3, 7, 9], 0.5)
    b = _render(SCENES, [9, 7], 0.5)
    c = SyntheticPoseDataset(32, photo_backgrounds=0.5, batch_size=1, **SCENES).render_tensors([3])
    assert torch.equal(a.image[2], b.image[1]) and torch.equal(a.image[3], b.image[0])
    assert torch.equal(a.image[1], c.image[0])
    again = _render(SCENES, [0, 3, 7, 9], 0.5)
    assert torch.equal(a.image, again.image)
    # More images than the CPU renders at a time: the photo inputs are split into sub-batches too.
    many = _render(SCENES, list(range(11)), 0.5)
    assert torch.equal(many.image[[0, 3, 7, 9]], a.image)


@have_photos
def test_photo_probability_mixes_backdrops_textures_and_plain_images():
    indices = list(range(24))
    off = _render(CROPS, indices)
    half = _render(CROPS, indices, 0.5)
    changed = (off.image != half.image).any(-1).float().mean((1, 2))
    assert int((changed == 0).sum()) >= 1  # some images keep their procedural surfaces
    assert int((changed > 0.5).sum()) >= 4  # some get a photo backdrop


@have_photos
def test_garment_prints_change_clothing_only_and_no_label():
    from poseforge.data.synth.classes import part_class_index

    indices = list(range(8))
    off = _render(CROPS, indices)
    on = SyntheticPoseDataset(32, photo_clothing=1.0, **CROPS).render_tensors(indices)
    for name in LABELS:
        assert torch.equal(getattr(off, name), getattr(on, name)), name
    changed = (off.image != on.image).any(-1)
    # Compared 2 px inside each region: edges are anti-aliased and some images blurred across them.
    def inner(names):
        m = torch.zeros_like(off.parts, dtype=torch.bool)
        for n in names:
            m |= off.parts == part_class_index(n)
        m = m.float()[:, None]
        return (-torch.nn.functional.max_pool2d(-m, 5, stride=1, padding=2)[:, 0]) > 0.5
    clothing, skin = inner(["Upper_Clothing", "Lower_Clothing"]), inner(["Face_Neck", "Left_Hand", "Right_Hand"])
    background = (-torch.nn.functional.max_pool2d(-(off.instance == 0).float()[:, None], 5, stride=1, padding=2)[:, 0]) > 0.5
    assert bool(clothing.any()) and bool(skin.any())
    assert changed[clothing].float().mean() > 0.8  # p = 1: (nearly) every garment shows a photo
    assert not bool(changed[skin].any()) and not bool(changed[background].any())


@have_photos
def test_garment_prints_leave_the_other_photo_draws_alone():
    indices = list(range(6))
    backdrops = _render(SCENES, indices, 0.5)
    both = SyntheticPoseDataset(32, photo_backgrounds=0.5, photo_clothing=0.5, **SCENES).render_tensors(indices)
    people = (-torch.nn.functional.max_pool2d(-(backdrops.instance > 0).float()[:, None], 5, stride=1, padding=2)[:, 0]) > 0.5
    changed = (backdrops.image != both.image).any(-1)
    background = (backdrops.instance == 0)
    background = (-torch.nn.functional.max_pool2d(-background.float()[:, None], 5, stride=1, padding=2)[:, 0]) > 0.5
    assert not bool(changed[background].any())  # backdrops and surface photos are the same draws
    assert bool(changed[people].any())  # some garments got prints
    again = SyntheticPoseDataset(32, photo_backgrounds=0.5, photo_clothing=0.5, batch_size=1, **SCENES).render_tensors([3])
    assert torch.equal(again.image[0], both.image[3])


def test_photo_option_errors_in_one_line_without_the_packages(monkeypatch):
    monkeypatch.setattr(photos_mod, "_package_dir", lambda name: None)
    with pytest.raises(PoseforgeError) as err:
        SyntheticPoseDataset(4, photo_backgrounds=0.5, **CROPS)
    message = str(err.value)
    assert "\n" not in message and "poseforge[sim2real]" in message and "scikit-image" in message
    SyntheticPoseDataset(4, photo_backgrounds=0.0, **CROPS).render_tensors([0])  # off: never looks for them
    with pytest.raises(PoseforgeError, match="probability"):
        SyntheticPoseDataset(4, photo_backgrounds=1.5, **CROPS)
    with pytest.raises(PoseforgeError) as err:
        SyntheticPoseDataset(4, photo_clothing=0.5, **CROPS)
    assert "poseforge[sim2real]" in str(err.value)
    with pytest.raises(PoseforgeError, match="photo_clothing: expected a probability"):
        SyntheticPoseDataset(4, photo_clothing=-0.1, **CROPS)


def test_default_path_never_imports_the_photo_packages():
    import subprocess
    import sys

    code = ("import sys; from poseforge.data.synth import SyntheticPoseDataset; "
            "SyntheticPoseDataset(2, image_size=(64, 80), people=(1, 1)).render_tensors([0]); "
            "print(any(m.split('.')[0] in ('skimage', 'sklearn') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@have_photos
def test_photo_atlas_holds_every_listed_photo():
    atlas = photos_mod.photo_atlas("cpu")
    assert atlas.shape == (3, photos_mod.PHOTO_HEIGHT, photos_mod.PHOTO_WIDTH * len(photos_mod.PHOTOS))
    assert 0.0 <= float(atlas.min()) and float(atlas.max()) <= 1.0
    # Sampling a photo's pixel centre returns that pixel (the tiles do not bleed into each other).
    k = 3
    u = torch.tensor([0.5 / photos_mod.PHOTO_WIDTH, 1 - 0.5 / photos_mod.PHOTO_WIDTH])
    v = torch.tensor([0.5 / photos_mod.PHOTO_HEIGHT, 0.5 / photos_mod.PHOTO_HEIGHT])
    got = photos_mod.sample_photos(atlas, torch.tensor([k, k]), u, v)
    want = atlas[:, 0, [k * photos_mod.PHOTO_WIDTH, (k + 1) * photos_mod.PHOTO_WIDTH - 1]]
    assert torch.allclose(got, want, atol=1e-6)


# ------------------------------------------------------------------------------------------ camera augmentation

CAMERA_STEPS = ("white_balance_prob", "grayscale_prob", "gaussian_blur_prob", "motion_blur_prob", "noise_prob", "jpeg_prob")


def test_camera_steps_are_off_by_default():
    a = AugmentConfig()
    assert all(getattr(a, f) == 0.0 for f in CAMERA_STEPS) and not a.camera
    for preset in (AugmentConfig.off(), AugmentConfig.rtmpose(1), AugmentConfig.rtmpose(2), AugmentConfig.vitpose()):
        assert not preset.camera


def test_configs_without_camera_steps_draw_what_they_drew_before():
    # The camera steps' parameters are drawn only when one of them is on: the generator's state after a
    # batch (and so every later draw of a training run) is unchanged for existing recipes.
    images = torch.rand(4, 3, 32, 24, generator=torch.Generator().manual_seed(0)) * 255
    g = torch.Generator().manual_seed(5)
    Photometric(AugmentConfig.rtmpose(1))(images, g)
    ref = torch.Generator().manual_seed(5)
    n = images.shape[0]
    p = Photometric(AugmentConfig.rtmpose(1))
    p.hsv.sample(n, ref), p.color.sample(n, ref), p.blur.sample(n, ref), p.erase.sample(n, ref)
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=ref))


@pytest.mark.parametrize("step", CAMERA_STEPS)
def test_each_camera_step_changes_pixels_only(step):
    from poseforge.data.transforms import TopDownTransform  # noqa: F401  (the path every crop takes)

    images = torch.rand(3, 3, 40, 32, generator=torch.Generator().manual_seed(1)) * 200 + 20
    base = AugmentConfig.off()
    config = dataclasses.replace(base, **{step: 1.0})
    assert config.photometric and config.camera
    out = Photometric(config)(images.clone(), torch.Generator().manual_seed(2))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    assert bool(((out - images).abs().amax((1, 2, 3)) > 0.5).all()), step
    again = Photometric(config)(images.clone(), torch.Generator().manual_seed(2))
    assert torch.equal(out, again)  # seeded: reproducible


def test_camera_steps_leave_keypoints_and_labels_alone():
    from poseforge.data.records import PoseInstance
    from poseforge.data.transforms import TopDownTransform

    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)
    kps = rng.uniform(20, 80, (17, 2))
    inst = PoseInstance(image_id=1, image_path=None, image_size=(100, 120), bbox=np.array([10.0, 10.0, 70.0, 90.0]),
                        keypoints=kps, visibility=np.full(17, 2.0), keypoint_set="coco17", image=image)
    plain = AugmentConfig(rotate_prob=0.3)
    camera = dataclasses.replace(plain, **{f: 1.0 for f in CAMERA_STEPS})
    a = TopDownTransform((48, 64), "coco17", augment=plain)(inst, generator=torch.Generator().manual_seed(3))
    b = TopDownTransform((48, 64), "coco17", augment=camera)(inst, generator=torch.Generator().manual_seed(3))
    for key in a:
        if key != "image" and isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["image"], b["image"])


def test_jpeg_roundtrip_behaves_like_jpeg():
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (64, 48, 3)).astype(np.float32), (0, 0), 3)
    x = torch.from_numpy(smooth).permute(2, 0, 1)[None].float()
    hi = jpeg_roundtrip(x, torch.tensor([95.0]))
    lo = jpeg_roundtrip(x, torch.tensor([10.0]))
    err_hi, err_lo = (float((y - x).abs().mean()) for y in (hi, lo))
    assert err_hi < 2.0 and err_lo > err_hi  # near-lossless at 95, lossy at 10
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(smooth.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 10])
    ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)
    err_ref = float(np.abs(ref - smooth).mean())
    assert 0.4 * err_ref < err_lo < 2.5 * err_ref  # the same size of loss as OpenCV's encoder


def test_blur_kernels_are_normalized_and_preserve_flat_images():
    flat = torch.full((2, 3, 24, 20), 100.0)
    assert torch.allclose(RandomGaussianBlur(1.0).apply(flat, torch.tensor([0.8, 2.0])), flat, atol=1e-3)
    params = torch.tensor([[5.0, 0.3], [11.0, 2.0]], dtype=torch.float64)
    k = RandomMotionBlur(1.0).kernels(params)
    assert torch.allclose(k.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(RandomMotionBlur(1.0).apply(flat, params), flat, atol=1e-3)
    assert torch.equal(RandomJPEG(1.0).apply(flat, torch.zeros(2)), flat)  # quality 0: not applied


def test_synth_cpu_photo_preset_is_synth_cpu_plus_the_options():
    from poseforge.train.presets import get_preset

    base, photo = get_preset("synth-cpu"), get_preset("synth-cpu-photo")
    assert base.data.synthetic.photo_backgrounds == 0.0 and not base.data.augment.camera
    assert photo.data.synthetic.photo_backgrounds == 0.5 and photo.data.augment.camera
    assert photo.model == base.model and photo.optim == base.optim and photo.schedule == base.schedule
    assert dataclasses.replace(photo.data.synthetic, photo_backgrounds=0.0) == base.data.synthetic


# ------------------------------------------------------------------------------------------ facing the camera


def _facing_share(facing_camera: float, people: tuple[int, int], n: int = 150) -> float:
    """Share of rendered people whose chest points toward the camera, from their camera-space joints."""
    ds = SyntheticPoseDataset(n, seed=5, image_size=(48, 64), people=people, facing_camera=facing_camera)
    facing = []
    for image in ds.render_batch(range(n)):
        for person in image.instances:
            k = torch.as_tensor(person.extras["keypoints_cam"], dtype=torch.float64)
            left = (k[5] - k[6]) + (k[11] - k[12])  # shoulders and hips, right -> left
            up = (k[5] + k[6]) - (k[11] + k[12])
            facing.append(float(torch.linalg.cross(left, up)[2] < 0))  # forward = left x up; camera looks along +z
    return sum(facing) / len(facing)


@pytest.mark.parametrize("people", [(1, 1), (1, 4)], ids=["crops", "scenes"])
def test_facing_camera_sets_the_share_of_people_facing_the_camera(people):
    # Lying poses and twisted torsos blur the chest direction a little, hence the margins.
    assert _facing_share(0.9, people) > 0.75
    assert _facing_share(0.1, people) < 0.25
    assert 0.38 < _facing_share(0.5, people) < 0.62


def test_facing_camera_changes_headings_only():
    a = SyntheticPoseDataset(8, **SCENES).render_tensors([0, 1, 2])
    b = SyntheticPoseDataset(8, facing_camera=0.5, **SCENES).render_tensors([0, 1, 2])
    c = SyntheticPoseDataset(8, facing_camera=0.95, **SCENES).render_tensors([0, 1, 2])
    assert torch.equal(a.image, b.image) and torch.equal(a.keypoints, b.keypoints)  # 0.5: as without the option
    assert not torch.equal(a.keypoints, c.keypoints)  # the people turn


def test_facing_camera_out_of_range_is_a_one_line_error():
    with pytest.raises(PoseforgeError, match="facing_camera: expected a probability"):
        SyntheticPoseDataset(4, facing_camera=1.5, **CROPS)


def test_facing_camera_reaches_the_training_source_and_its_workers():
    from poseforge.models import create_model
    from poseforge.train.config import apply_overrides
    from poseforge.train.data import build_train_source
    from poseforge.train.presets import get_preset

    config = apply_overrides(get_preset("synth-cpu"), ["data.synthetic.facing_camera=0.8",
                                                       "data.synthetic.train_images=4", "data.synthetic.val_images=2"])
    with torch.device("meta"):
        model = create_model(config.model.name)
    source = build_train_source(config.data, model)
    assert source.dataset.config.facing_camera == 0.8
    assert source._options["facing_camera"] == 0.8  # what a render worker rebuilds the source from
