"""Photo backgrounds and textures from the sample images that ship inside pip packages (issue 31).

With ``photo_backgrounds = p > 0`` (:class:`~.scene.SceneConfig`, ``SyntheticPoseDataset(photo_backgrounds=p)``,
``data.synthetic.photo_backgrounds`` in a training config) each image shows, with probability ``p``, a
random crop of a real photo behind everything the renderer draws (sky, floor and walls give way to it;
people, props, seats and occluders stay in front), and otherwise each floor, wall, prop box, occluder and
wall picture takes a photo as its texture with probability ``p`` (random scale, offset, mirroring and a
colour / white-balance shift; planes keep their shading and blob shadows). Labels never change: the
keypoints, masks, parts, instance ids, depth and normals are those of the same image without photos
(depth and normals behind a backdrop still describe the virtual room, not the photo). With
``photo_clothing = q > 0`` each garment of each person (top, bottom, hat, bag) takes a photo print with
probability ``q`` (:func:`~.scene.build_scenes`; skin, hair and the face keep their procedural materials).

The photos are read once per process from the installed packages (no network), centre-cropped to 4:3,
resized to 384x288 and packed side by side into one atlas tensor per device, so a batch samples every
photo pixel it needs with one ``grid_sample`` call. The set is fixed: both packages must be installed
(``pip install poseforge[sim2real]``), so a seed renders the same images everywhere.

Only images whose licence allows redistribution and use for training, as stated in the packages' own
documentation (scikit-image: each loader's docstring in ``skimage/data/_fetchers.py``; scikit-learn:
``sklearn/datasets/images/README.txt``):

============================  =======================================  ==============================================
file                          content                                  licence (as the package states it)
============================  =======================================  ==============================================
skimage/data/chelsea.png      a cat on a rug                           CC0, photographer Stefan van der Walt
skimage/data/coffee.png       a cup of coffee on a table               CC0, photographer Rachel Michetti
skimage/data/rocket.jpg       rocket on the pad, sky, landscape        public domain (released by SpaceX)
skimage/data/brick.png        brick wall (grayscale)                   CC0 (CC0Textures "Bricks25")
skimage/data/grass.png        grass (grayscale)                        CC0 (DeviantArt, linolafett "Grass 01")
skimage/data/gravel.png       gravel (grayscale)                       CC0 (CC0Textures "Gravel04")
skimage/data/clock_motion.png a wall clock, motion blurred (grayscale) public domain (photographer Stefan van der Walt)
sklearn/datasets/images/      a temple among trees, sky                CC BY 2.0, "some rights reserved by
china.jpg                                                              danielbuechele" (flickr.com/photos/danielbuechele)
sklearn/datasets/images/      a flower close up                        CC BY 2.0 (flickr.com/photos/vultilion; the
flower.jpg                                                             README's attribution line repeats danielbuechele)
============================  =======================================  ==============================================

Left out: ``astronaut.png``, ``camera.png`` and ``lfw_subset.npy`` (public domain / CC0, but they show
people who would be unlabelled: a pose model must not learn that a person is background);
``coins.png``, ``ihc.png``, ``text.png`` ("no known copyright restrictions" is not a licence);
``moon.png``, ``page.png``, ``color.png``, ``logo.png``, ``motorcycle_*.png``, ``hubble_deep_field.jpg``,
``retina.jpg``, ``cell.png``, ``microaneurysms.png``, ``horse.png`` and the chessboards (no licence
stated, not photos of scenes, or microscopy / medical / astronomy images). The CC BY images need their
attribution kept wherever rendered images are redistributed (this table; docs/sim2real.md).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import PoseforgeError

__all__ = ["PHOTOS", "PHOTO_HEIGHT", "PHOTO_WIDTH", "photo_files", "photo_atlas", "sample_photos", "require_photos"]

# (package, path inside the package)
PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/brick.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("skimage", "data/clock_motion.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)
_PIP_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}
PHOTO_HEIGHT, PHOTO_WIDTH = 288, 384

_ATLAS: dict[str, Tensor] = {}
_HOST: list[Tensor] = []


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def photo_files() -> list[Path]:
    """The photo files in :data:`PHOTOS` order; a one-line error naming the extra when a package is missing."""
    dirs = {pkg: _package_dir(pkg) for pkg in dict.fromkeys(p for p, _ in PHOTOS)}
    missing = [_PIP_NAMES[p] for p, d in dirs.items() if d is None]
    if missing:
        raise PoseforgeError(f"photo_backgrounds needs {' and '.join(missing)} (its sample photos): "
                             f"pip install 'poseforge[sim2real]'")
    files = [dirs[p] / rel for p, rel in PHOTOS]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise PoseforgeError(f"photo_backgrounds: sample photo(s) missing from the installed packages: {', '.join(absent)}")
    return files


def require_photos() -> None:
    """Raise the one-line error of :func:`photo_files` now (cheap: no decoding)."""
    photo_files()


def _load_host() -> Tensor:
    """All photos as one float32 atlas [3, H, N*W] in [0, 1] on the CPU (decoded once per process)."""
    if not _HOST:
        import cv2

        from ..images import load_image

        tiles = []
        for path in photo_files():
            img = load_image(path)  # RGB uint8 (grayscale files come back as 3 equal channels)
            h, w = img.shape[:2]
            want = PHOTO_WIDTH / PHOTO_HEIGHT
            if w / h > want:  # centre crop to 4:3
                cw = int(round(h * want))
                img = img[:, (w - cw) // 2:(w - cw) // 2 + cw]
            else:
                ch = int(round(w / want))
                img = img[(h - ch) // 2:(h - ch) // 2 + ch]
            img = cv2.resize(np.ascontiguousarray(img), (PHOTO_WIDTH, PHOTO_HEIGHT), interpolation=cv2.INTER_AREA)
            tiles.append(img)
        atlas = np.concatenate(tiles, axis=1)  # [H, N*W, 3]
        _HOST.append(torch.from_numpy(atlas).permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous())
    return _HOST[0]


def photo_atlas(device: "torch.device | str") -> Tensor:
    """The photo atlas [3, PHOTO_HEIGHT, N * PHOTO_WIDTH] (float32 RGB in [0, 1]) on ``device``, cached."""
    key = str(torch.device(device))
    if key not in _ATLAS:
        _ATLAS[key] = _load_host().to(device)
    return _ATLAS[key]


def num_photos() -> int:
    return len(PHOTOS)


def _mirror(t: Tensor, margin: float) -> Tensor:
    """Texture coordinate -> [margin, 1 - margin], repeated with mirroring (no seams between tiles)."""
    t = torch.remainder(t, 2.0)
    t = torch.where(t > 1.0, 2.0 - t, t)
    return t.clamp(margin, 1.0 - margin)


def sample_photos(atlas: Tensor, index: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Bilinear samples [3, M] of photos ``index`` [M] at texture coordinates ``u``, ``v`` [M] (1 = the photo's
    width / height; repeated with mirroring outside [0, 1)). One ``grid_sample`` call for every pixel."""
    n = atlas.shape[2] // PHOTO_WIDTH
    uu = _mirror(u, 0.5 / PHOTO_WIDTH)
    vv = _mirror(v, 0.5 / PHOTO_HEIGHT)
    gx = (index.to(uu.dtype) + uu) * (2.0 / n) - 1.0  # align_corners=False: -1 and 1 are the atlas' outer edges
    gy = vv * 2.0 - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2)
    out = F.grid_sample(atlas[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(3, -1)
