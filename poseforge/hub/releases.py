"""The official released weights poseforge resolves by name, with their sources and licences.

Each entry names the upstream files (a Hugging Face repository or a release URL), the checksum the
upstream publishes where there is one (mmengine's ``publish_model`` puts the first 8 digits of the
sha256 in the file name; the RTMDet ONNX digest is the file's full sha256), and the converter that
turns them into a poseforge model folder. Reported accuracies are the upstream's own (COCO val2017 with
a person detector of AP 56.4, or COCO-WholeBody v1.0 val), not measured here.
"""
from __future__ import annotations

from . import RemoteFile, WeightsSpec, register_weights

_CONVERTER = "poseforge.convert.pretrained:convert_release"
_MMPOSE = "https://download.openmmlab.com/mmpose/v1/projects"


def _hf(name: str, repo: str, description: str, default: bool = False) -> None:
    register_weights(WeightsSpec(
        name, "pose", description=description, license="Apache-2.0",
        source=f"https://huggingface.co/{repo} (ViTPose / ViTPose++, University of Sydney; transformers layout)",
        files=(RemoteFile("config.json", hf_repo=repo), RemoteFile("model.safetensors", hf_repo=repo)),
        converter=_CONVERTER, convert_options={"format": "hf"}, default=default))


def _mmpose(name: str, path: str, sha_prefix: str | None, description: str, default: bool = False,
            **options: object) -> None:
    url = f"{_MMPOSE}/{path}"
    register_weights(WeightsSpec(
        name, "pose", description=description, license="Apache-2.0", source=f"{url} (mmpose model zoo)",
        files=(RemoteFile(url.rsplit("/", 1)[1], url=url, sha256=sha_prefix),),
        converter=_CONVERTER, convert_options={"format": "rtmpose", **options}, default=default))


# ----- ViTPose / ViTPose++ (Hugging Face transformers checkpoints)
_hf("vitpose-b.coco", "usyd-community/vitpose-base",
    "ViTPose-B, classic decoder, COCO 256x192; reported COCO AP 0.757", default=True)
_hf("vitpose-b-simple.coco", "usyd-community/vitpose-base-simple",
    "ViTPose-B, simple decoder, COCO 256x192; reported COCO AP 0.756", default=True)
_hf("vitpose-b.coco-aic-mpii", "usyd-community/vitpose-base-coco-aic-mpii",
    "ViTPose-B trained on COCO + AI Challenger + MPII, COCO head, 256x192")
for _size, _repo in (("s", "small"), ("b", "base"), ("l", "large"), ("h", "huge")):
    _hf(f"vitpose++-{_size}.coco", f"usyd-community/vitpose-plus-{_repo}",
        f"ViTPose++-{_size.upper()} (six task experts; the released HF model keeps the COCO head), 256x192",
        default=True)

# ----- RTMPose (body7: trained on seven public body datasets), DWPose, RTMW (mmpose 1.x checkpoints)
_mmpose("rtmpose-t.body7", "rtmposev1/rtmpose-t_simcc-body7_pt-body7_420e-256x192-026a1439_20230504.pth", "026a1439",
        "RTMPose-t, body7, 256x192; reported COCO AP 0.659", default=True)
_mmpose("rtmpose-s.body7", "rtmposev1/rtmpose-s_simcc-body7_pt-body7_420e-256x192-acd4a1ef_20230504.pth", "acd4a1ef",
        "RTMPose-s, body7, 256x192; reported COCO AP 0.697", default=True)
_mmpose("rtmpose-m.body7", "rtmposev1/rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.pth", "e48f03d0",
        "RTMPose-m, body7, 256x192; reported COCO AP 0.749", default=True)
_mmpose("rtmpose-l.body7", "rtmposev1/rtmpose-l_simcc-body7_pt-body7_420e-256x192-4dba18fc_20230504.pth", "4dba18fc",
        "RTMPose-l, body7, 256x192; reported COCO AP 0.767", default=True)
_mmpose("rtmpose-m-384x288.body7", "rtmposev1/rtmpose-m_simcc-body7_pt-body7_420e-384x288-65e718c4_20230504.pth",
        "65e718c4", "RTMPose-m, body7, 384x288; reported COCO AP 0.766", default=True, input_size=(288, 384))
_mmpose("rtmpose-l-384x288.body7", "rtmposev1/rtmpose-l_simcc-body7_pt-body7_420e-384x288-3f5a1437_20230504.pth",
        "3f5a1437", "RTMPose-l, body7, 384x288; reported COCO AP 0.783", default=True, input_size=(288, 384))
_mmpose("rtmpose-m.aic-coco", "rtmposev1/rtmpose-m_simcc-aic-coco_pt-aic-coco_420e-256x192-63eb25f7_20230126.pth",
        "63eb25f7", "RTMPose-m, AI Challenger + COCO, 256x192; reported COCO AP 0.758")
_mmpose("dwpose-l.ucoco", "rtmposev1/rtmpose-l_simcc-ucoco_dw-ucoco_270e-256x192-4d6dfc62_20230728.pth", "4d6dfc62",
        "DWPose-l (distilled RTMPose-l), COCO-WholeBody + UBody, 133 keypoints, 256x192; reported whole AP 0.631",
        default=True)
_mmpose("dwpose-l-384x288.ucoco", "rtmposev1/rtmpose-l_simcc-ucoco_dw-ucoco_270e-384x288-2438fd99_20230728.pth",
        "2438fd99", "DWPose-l, COCO-WholeBody + UBody, 133 keypoints, 384x288; reported whole AP 0.665", default=True,
        input_size=(288, 384))
# RTMW releases carry no checksum in their names: the digest is recorded on first download.
_mmpose("rtmw-m.cocktail14", "rtmw/rtmw-dw-l-m_simcc-cocktail14_270e-256x192-20231122.pth", None,
        "RTMW-m (distilled from RTMW-l), 14 whole-body datasets, 133 keypoints, 256x192", default=True)
_mmpose("rtmw-l.cocktail14", "rtmw/rtmw-dw-x-l_simcc-cocktail14_270e-256x192-20231122.pth", None,
        "RTMW-l (distilled from RTMW-x), 14 whole-body datasets, 133 keypoints, 256x192", default=True)

# ----- person detector: RTMDet-nano (mmdeploy end2end ONNX, NMS in the graph; as rtmlib uses it)
register_weights(WeightsSpec(
    "rtmdet-nano.person", "detector",
    description="RTMDet-nano person detector (COCO + Objects365 person), 320x320 end2end ONNX; reported person AP "
                "0.403",
    license="Apache-2.0", source=f"{_MMPOSE}/rtmposev1/onnx_sdk/ (mmpose / rtmlib ONNX SDK)",
    files=(RemoteFile("rtmdet-nano-person.onnx",
                      url=f"{_MMPOSE}/rtmposev1/onnx_sdk/rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.zip",
                      member="end2end.onnx",
                      sha256="b8585adb6d1352796f6e86337e09c3459b830645a7e7192d9381670bea2facbd"),),
    default=True))

# ----- Sapiens pose (facebookresearch/sapiens docs/evaluate/POSE_README.md links these files; CC BY-NC 4.0, so
# non-commercial use only). No checksum is published: the digest is recorded on first download.
_SAPIENS_POSE_REPO = "noahcao/sapiens-pose-coco"
for _size, _coco_ap, _wb_ap in (("0.3b", 796, 620), ("0.6b", 812, 695), ("1b", 821, 727), ("2b", 822, 745)):
    for _arch, _tag, _file, _ap, _what in (
            ("pose-coco", "coco", f"coco_best_coco_AP_{_coco_ap}", _coco_ap, "COCO, 17 keypoints; reported COCO AP"),
            ("pose-wholebody", "coco-wholebody", f"coco_wholebody_best_coco_wholebody_AP_{_wb_ap}", _wb_ap,
             "COCO-WholeBody, 133 keypoints; reported whole-body AP")):
        _name = f"sapiens_{_size}_{_file}.pth"
        register_weights(WeightsSpec(
            f"sapiens-{_size}-{_arch}.{_tag}", "pose",
            description=f"Sapiens-{_size.upper()} top-down pose, 1024x768, {_what} 0.{_ap}",
            license="CC-BY-NC-4.0", source=f"https://huggingface.co/{_SAPIENS_POSE_REPO} (Sapiens, Meta; mmpose layout)",
            files=(RemoteFile(_name, hf_repo=_SAPIENS_POSE_REPO,
                              hf_filename=f"sapiens_host/pose/checkpoints/sapiens_{_size}/{_name}"),),
            converter=_CONVERTER, convert_options={"format": "sapiens"}, default=True))
