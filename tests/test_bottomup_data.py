"""Bottom-up data: whole images with every person, the ignore mask of crowds and unlabeled people (carried
through the augmentation into the loss), multi-person synthetic scenes, and CrowdPose AP / AP(E/M/H) of
bottom-up predictions equal to xtcocotools' crowd protocol."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.data.augment import AugmentConfig
from poseforge.data.batch import collate
from poseforge.data.evalsets import coco_eval_set
from poseforge.data.image_transform import ImageTransform, ignore_map
from poseforge.data.records import PoseInstance
from poseforge.data.sources import FileSource, SyntheticSource
from poseforge.data.transforms import affine_points, invert_affine
from poseforge.errors import DataError
from poseforge.keypoints import get_keypoint_set
from poseforge.models import create_model
from poseforge.outputs import HeatmapsTags, Predictions

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = 40083  # 500 x 333: two labeled people and one (id 1202706) with no labeled keypoint
CROWD = (380, 20, 100, 80)  # x, y, w, h of the crowd region added to it


def _rle_of_box(x: int, y: int, w: int, h: int, width: int, height: int) -> dict:
    """An uncompressed COCO RLE (column-major runs, as iscrowd annotations store them) of a box."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[y:y + h, x:x + w] = 1
    flat = pixels.T.reshape(-1)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"counts": np.diff(np.concatenate([[0], change])).tolist(), "size": [height, width]}


@pytest.fixture(scope="module")
def crowd_file(coco_file, tmp_path_factory):
    """The COCO sample's image 40083 with a crowd annotation (an RLE) added."""
    doc = json.loads(coco_file.read_text())
    doc["images"] = [i for i in doc["images"] if i["id"] == IMAGE]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] == IMAGE]
    image = doc["images"][0]
    crowd = copy.deepcopy(doc["annotations"][0])
    crowd.update(id=9_000_001, iscrowd=1, num_keypoints=0, keypoints=[0] * 51, bbox=list(CROWD), area=CROWD[2] * CROWD[3],
                 segmentation=_rle_of_box(*CROWD, image["width"], image["height"]))
    doc["annotations"].append(crowd)
    path = tmp_path_factory.mktemp("crowd") / "crowd.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def crowd_record(crowd_file, coco_file):
    source = FileSource(crowd_file, image_root=coco_file.parent, per_instance=False)
    assert len(source) == 1
    return source.load([0])[0]


def _cell(sample, xy) -> tuple[int, int]:
    """The mask cell (row, column) an image point lands in."""
    point = affine_points(torch.tensor([[xy]], dtype=torch.float64), sample["matrix"].double())[0, 0]
    stride = sample["image"].shape[-1] / sample["mask"].shape[-1]
    col, row = torch.floor((point + 0.5) / stride).long().tolist()
    return row, col


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under numpy 2
def test_whole_image_batch_masks_the_crowd_and_the_unlabeled_person(crowd_record, crowd_file):
    record, image = crowd_record
    assert len(record.instances) == 4 and sum(i.iscrowd for i in record.instances) == 1
    # The rasterized regions are pycocotools' (HigherHRNet's rule): the crowd's RLE and the unlabeled person's polygons.
    mask_utils = pytest.importorskip("pycocotools.mask")
    doc = json.loads(crowd_file.read_text())
    h, w = image.shape[:2]
    expected = np.zeros((h, w), dtype=bool)
    for ann in doc["annotations"]:
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            rles = mask_utils.frPyObjects(ann["segmentation"], h, w)
            expected |= mask_utils.decode(mask_utils.merge(rles if isinstance(rles, list) else [rles])).astype(bool)
    regions = ignore_map(record.instances, w, h)
    np.testing.assert_array_equal(regions.astype(bool), expected)

    sample = ImageTransform((256, 256), "coco17")(record, image)
    mask = sample["mask"]
    assert mask.shape == (128, 128) and mask.dtype == torch.uint8
    people = [i for i in record.instances if not i.iscrowd]
    assert sample["keypoints"].shape == (3, 17, 2) and sample["valid"].tolist() == [p.num_labeled > 0 for p in people]
    # zero over the crowd and over the unlabeled person, one at every labeled keypoint and over the padding
    assert mask[_cell(sample, (CROWD[0] + CROWD[2] / 2, CROWD[1] + CROWD[3] / 2))] == 0
    unlabeled = next(p for p in people if p.num_labeled == 0)
    x, y, bw, bh = unlabeled.bbox
    assert mask[_cell(sample, (x + bw / 2, y + bh / 2))] == 0
    for person in people:
        for xy in person.keypoints[person.visibility > 0]:
            assert mask[_cell(sample, tuple(xy))] == 1
    assert bool(mask[:10].all()) and bool(mask[-10:].all())  # the letterbox padding above and below the photo
    # every ignored cell lies in the regions (its centre, mapped back to the image, within a pixel of them)
    rows, cols = np.nonzero(mask.numpy() == 0)
    centres = torch.tensor(np.stack([cols, rows], 1) * 2 + 0.5, dtype=torch.float64)
    back = affine_points(centres, invert_affine(sample["matrix"].double()))
    near = np.pad(expected, 2)  # (a dilation by 2 px: bilinear sampling at the edges)
    grow = np.zeros_like(near)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            grow |= np.roll(np.roll(near, dy, 0), dx, 1)
    ix, iy = back.round().long().numpy().T
    assert grow[iy + 2, ix + 2].all()
    assert 0.5 * expected.sum() < (mask == 0).sum() * (2 * w / 256) ** 2 < 1.5 * expected.sum()  # the area agrees


def test_augmented_masks_stay_aligned_and_mirror_with_the_image(crowd_record):
    record, image = crowd_record
    plain = ImageTransform((256, 256), "coco17")(record, image)
    flip_only = AugmentConfig(flip_prob=1.0, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)
    flipped = ImageTransform((256, 256), "coco17", augment=flip_only)(record, image, torch.Generator().manual_seed(0))
    assert bool(flipped["flipped"])
    # the fit is symmetric, so the mirrored sample's mask is the plain one mirrored, cell for cell
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1)) and bool((plain["mask"] == 0).any())
    # with scale, shift and rotation too, the mask follows the people: zero at the crowd, one at labeled keypoints
    strong = AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_prob=1.0, shift_factor=0.1, scale_prob=1.0,
                           scale_factor=(0.7, 1.3), rotate_prob=1.0, rotate_factor=40.0)
    transform = ImageTransform((192, 160), "coco17", augment=strong)
    seen_flip = set()
    for seed in range(6):
        sample = transform(record, image, torch.Generator().manual_seed(seed))
        seen_flip.add(bool(sample["flipped"]))
        assert sample["mask"].shape == (80, 96)
        row, col = _cell(sample, (CROWD[0] + CROWD[2] / 2, CROWD[1] + CROWD[3] / 2))
        if 0 <= row < 80 and 0 <= col < 96:
            assert sample["mask"][row, col] == 0
        labeled = sample["visibility"] > 0
        cells = torch.floor((sample["keypoints"][labeled] + 0.5) / 2).long()
        assert bool(sample["mask"][cells[:, 1], cells[:, 0]].all())
    assert seen_flip == {False, True}


def test_the_mask_reaches_the_loss(crowd_record):
    """Through the estimator protocol: outputs equal to the targets except inside the ignored regions have
    zero heatmap loss; the same garbage outside them does not."""
    record, image = crowd_record
    model = create_model("litepose-xs", keypoint_set="coco17", input_size=(128, 128), depths=(1, 1, 1, 1))
    batch = collate([model.transform(False)(record, image)])
    targets = model.codec.encode(batch)
    assert float(targets["heatmap_mask"].min()) == 0.0 and float(targets["heatmap_mask_hr"].min()) == 0.0
    tags = torch.zeros(1, 17, 32, 32)
    inside = HeatmapsTags(targets["heatmaps"] + 5 * (1 - targets["heatmap_mask"][:, None]), tags,
                          targets["heatmaps_hr"] + 5 * (1 - targets["heatmap_mask_hr"][:, None]))
    parts = model.loss(inside, batch)
    assert float(parts["heatmaps"]) == 0.0 and float(parts["heatmaps_hr"]) == 0.0
    outside = HeatmapsTags(targets["heatmaps"] + 5 * targets["heatmap_mask"][:, None], tags, targets["heatmaps_hr"])
    assert float(model.loss(outside, batch)["heatmaps"]) > 1.0


def test_ignore_regions_fall_back_to_the_visible_mask_then_the_box_and_name_bad_input():
    def person(**changes):
        base = dict(image_id=1, image_path=None, image_size=(40, 30), bbox=np.array([2.0, 3.0, 5.0, 4.0]),
                    keypoints=np.zeros((17, 2)), visibility=np.zeros(17), keypoint_set="coco17", instance_id=7)
        return PoseInstance(**{**base, **changes})

    visible = np.zeros((30, 40), dtype=bool)
    visible[20:25, 30:33] = True
    labeled = person(visibility=np.ones(17), extras={"mask": ~visible})
    assert ignore_map([labeled], 40, 30) is None  # a labeled person is never ignored
    regions = ignore_map([person(), person(extras={"mask": visible}), labeled], 40, 30)
    expected = visible.copy()
    expected[3:7, 2:7] = True  # the box (no segmentation, no mask)
    np.testing.assert_array_equal(regions.astype(bool), expected)
    with pytest.raises(DataError, match="annotation 7: field 'mask'"):
        ignore_map([person(extras={"mask": visible[:10]})], 40, 30)
    with pytest.raises(DataError, match="RLE of size"):
        ignore_map([person(extras={"segmentation": {"counts": [0, 4], "size": [2, 2]}})], 40, 30)
    with pytest.raises(DataError, match="not a valid RLE"):
        ignore_map([person(extras={"segmentation": {"counts": "zz", "size": [30, 40]}})], 40, 30)


def test_synthetic_scenes_as_whole_images():
    source = SyntheticSource(3, seed=5, image_size=(96, 96), people=(2, 4), clutter=False, per_instance=False, dense=())
    transform = ImageTransform((96, 96), "coco17", augment=True)
    items = source.load([0, 1, 2])
    assert all(record.dense == {} and 2 <= len(record.instances) <= 4 for record, _ in items)
    batch = collate([transform(r, im, torch.Generator().manual_seed(i)) for i, (r, im) in enumerate(items)])
    assert batch.keypoints.shape[0] == 3 and batch.keypoints.shape[2:] == (17, 2) and batch.mask.shape == (3, 48, 48)
    assert int(batch.valid.sum()) >= 6
    with pytest.raises(Exception, match="unknown dense labels"):
        SyntheticSource(1, seed=0, image_size=(64, 64), people=(1, 1), per_instance=False, dense=("edges",))


# ----------------------------------------------------------------------------- CrowdPose
def _crowdpose_doc(coco_doc: dict) -> dict:
    """A CrowdPose-style file from the COCO sample (no area, as CrowdPose's own files): 14 keypoints (COCO
    5-16, nose as top of head, left eye as neck), a crowdIndex per image, num_keypoints counting the
    visible (v=2) keypoints."""
    doc = copy.deepcopy(coco_doc)
    order = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 1]
    for image, crowd_index in zip(doc["images"], [0.1, 0.5, 0.9, 0.3]):
        image["crowdIndex"] = crowd_index
    for ann in doc["annotations"]:
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)[order]
        ann["keypoints"] = k.reshape(-1).tolist()
        ann["num_keypoints"] = int((k[:, 2] == 2).sum())
        ann.pop("area", None)
    doc["categories"][0]["keypoints"] = list(get_keypoint_set("crowdpose14").names)
    doc["categories"][0]["skeleton"] = []
    return doc


@pytest.fixture(scope="module")
def crowdpose_file(coco_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("crowdpose") / "test_crowdpose.json"
    path.write_text(json.dumps(_crowdpose_doc(json.loads(coco_file.read_text()))))
    return path


def _bottom_up_predictions(doc: dict, rng) -> tuple[Predictions, torch.Tensor]:
    """Every image's people jittered, in shuffled order, plus a false person per image, random keypoint scores."""
    ids = [image["id"] for image in doc["images"]]
    people = {i: [np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3) for a in doc["annotations"]
                  if a["image_id"] == i] for i in ids}
    n = max(len(p) for p in people.values()) + 1
    keypoints, scores, valid = np.zeros((len(ids), n, 14, 2)), np.zeros((len(ids), n, 14)), np.zeros((len(ids), n), bool)
    for b, i in enumerate(ids):
        found = [k[:, :2] + rng.normal(0, 4.0, (14, 2)) for k in people[i]]
        found.append(rng.uniform(0, 300, (14, 2)))
        for slot, person in zip(rng.permutation(len(found)), found):
            keypoints[b, slot], scores[b, slot], valid[b, slot] = person, rng.uniform(0.05, 1.0, 14), True
    return Predictions(torch.from_numpy(keypoints), torch.from_numpy(scores).float(), torch.from_numpy(valid)), torch.tensor(ids)


def test_crowdpose_bottom_up_ap_equals_xtcocotools(crowdpose_file):
    """A bottom-up model's metric (people ranked by mean keypoint score, no OKS-NMS: mmpose's associative-
    embedding evaluation) gives xtcocotools' keypoints_crowd numbers, AP(E)/AP(M)/AP(H) included."""
    pytest.importorskip("xtcocotools")
    from poseforge.evaluation.coco import _import_xtcocotools

    doc = json.loads(crowdpose_file.read_text())
    model = create_model("litepose-xs", input_size=(64, 64), depths=(1, 1, 1, 1))  # the zoo's CrowdPose-14 set
    eval_set = coco_eval_set(crowdpose_file)
    predictions, ids = _bottom_up_predictions(doc, np.random.default_rng(3))
    metric = model.metric(eval_set)
    metric.update(predictions, {"image_id": ids, "index": torch.arange(len(ids))})
    stats = metric.compute()
    results = [{"image_id": int(ids[b]), "category_id": 1, "score": float(predictions.scores[b, s].double().mean()),
                "keypoints": np.concatenate([predictions.keypoints[b, s].numpy(),
                                             predictions.scores[b, s].double().numpy()[:, None]], 1).reshape(-1).tolist()}
               for b, s in zip(*np.nonzero(predictions.valid.numpy()))]
    assert len(metric.results) == len(results)  # every person scored: no NMS removed one
    COCO, COCOeval = _import_xtcocotools()
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        gt = COCO(str(crowdpose_file))
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints_crowd", np.asarray(get_keypoint_set("crowdpose14").sigmas),
                             False)  # no area in the file: 0.53 x box area, as mmpose's CrowdPose config (use_area=False)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")
    np.testing.assert_allclose([stats[n] for n in names], evaluator.stats, rtol=0, atol=1e-6)
    assert 0.1 < stats["AP"] < 0.99 and len({stats["AP(E)"], stats["AP(M)"], stats["AP(H)"]}) == 3


def test_eval_cli_prints_crowdpose_stats_for_a_bottom_up_model(crowdpose_file, coco_file, tmp_path, capsys):
    """``poseforge eval --model DIR --data test_crowdpose.json`` runs a bottom-up model (no boxes, no detector)
    on the photos and prints AP, AP50, AP75, AR and AP(E)/AP(M)/AP(H)."""
    data = tmp_path / "test_crowdpose.json"
    data.write_text(crowdpose_file.read_text())
    for image in json.loads(data.read_text())["images"]:  # the COCO sample's photos, linked beside the file
        (tmp_path / image["file_name"]).symlink_to(coco_file.parent / image["file_name"])
    torch.manual_seed(0)
    create_model("litepose-xs", input_size=(96, 96), depths=(1, 1, 1, 1)).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "model"), "--data", str(data), "--workers", "0", "--no-flip"]) == 0
    out = capsys.readouterr().out
    header = next(line.split() for line in out.splitlines() if line.split()[:1] == ["AP"])
    assert {"AP", "AP50", "AP75", "AR", "AP(E)", "AP(M)", "AP(H)"} <= set(header)
