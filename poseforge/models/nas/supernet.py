"""The once-for-all LitePose supernet: the largest architecture's weights, any subnet of the search space run
by slicing them, and sandwich-rule training through the ordinary estimator protocol.

Weight sharing (OFA, Cai et al., ICLR 2020; LitePose's ``pose_supermobilenet.py``): a subnet uses the first
``c`` output / input channels of every convolution and BatchNorm, the first ``d`` blocks of every stage and the
centre of every depthwise kernel - through OFA's learned ``k^2 x k^2`` kernel transformation matrices when the
search space says so (7 -> 5 -> 3, identity at initialization). The parameters keep the names of the plain
``litepose-mobilenetv2`` backbone and ``litepose-fusion`` head, so :func:`extract_subnet` copies a subnet out
key by key into a plain :class:`~poseforge.models.estimators.bottomup.BottomUpEstimator` (a normal
``BottomUpConfig`` model that ``save_pretrained`` / ``load_model`` / export handle) whose outputs equal the
supernet's with that subnet active.

:class:`LitePoseSupernet` is a bottom-up estimator (``type: litepose-supernet``; zoo ``litepose-supernet``, the
official supernet: stem 24, stages 32 / 64 / 96 / 160 of 6 / 8 / 10 / 10 blocks, 7x7 kernels, expansion 6,
deconvolutions 64 / 48 / 32, inputs up to 512). ``set_active(subnet)`` picks what ``forward``, ``predict``,
``transform`` and ``codec`` use: the subnet's weights and its input resolution (inputs of another size are
resized, bilinear with antialiasing).

Sandwich rule (BigNAS / OFA): in training mode with gradients on, ``forward`` runs the largest subnet and
``loss(outputs, batch)`` adds the losses of the smallest subnet and ``sandwich_random`` random ones on the same
batch (each at its own resolution: the images resized, the keypoints scaled, its own codec's targets). The
Trainer backpropagates the sum once, which gives the same gradients as accumulating one backward pass per
subnet, so the shared Trainer (``poseforge train``, ``poseforge nas train``) trains a supernet with no loop of
its own. Only the largest subnet updates the BatchNorm running statistics (the others normalize with their
batch statistics), so the supernet's validation scores its largest subnet; any other subnet gets its
statistics recalibrated on training images before it is scored (``poseforge.train.nas``), as OFA does.
The random subnets of micro-batch ``n`` are drawn from ``(sampler_seed, n)``, ``n`` being a buffer of the model
(``sandwich_draws``), so a resumed run draws exactly what the uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PoseforgeError
from ...outputs import HeatmapsTags
from ...registry import ESTIMATORS, MODEL_CONFIGS, MODELS
from ..backbones.mobilenetv2 import LitePoseMobileNetV2, MobileNetV2Config, make_divisible
from ..estimators.base import Estimator
from ..estimators.bottomup import BottomUpConfig, BottomUpEstimator
from ..heads.bottomup import LitePoseHead, LitePoseHeadConfig, SeparableConv
from ..loading import build_model, model_from_state_dict, skip_meta_init
from .space import LITEPOSE_SUPERNET_DEPTHS, SearchSpace, Subnet, SubnetSpace, litepose_macs, mix_seed

__all__ = ["SupernetConfig", "LitePoseSupernet", "ElasticMobileNetV2", "ElasticLitePoseHead", "extract_subnet",
           "subnet_config", "subnet_macs", "litepose_supernet_config"]


@dataclasses.dataclass(frozen=True)
class SupernetConfig(BottomUpConfig):
    """A LitePose supernet: the largest architecture (``backbone``, ``head``) and its :class:`SearchSpace`.

    Attributes:
        space: the elastic dimensions; ``input_size`` always follows its largest resolution.
        sandwich: train with the sandwich rule (largest + smallest + random subnets per batch); ``False``
            trains the active subnet alone.
        sandwich_random: random subnets per batch besides the largest and the smallest (BigNAS: 2).
        sampler_seed: seeds the random subnets (with the micro-batch count).
        (other fields as :class:`~poseforge.models.estimators.bottomup.BottomUpConfig`)
    """

    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    sandwich: bool = True
    sandwich_random: int = 2
    sampler_seed: int = 0
    type: str = "litepose-supernet"

    def __post_init__(self) -> None:
        side = max(self.space.resolutions)  # the supernet's input is its largest subnet's
        object.__setattr__(self, "input_size", (side, side))
        if self.codec and "input_size" in self.codec:
            object.__setattr__(self, "codec", {**self.codec, "input_size": [side, side]})
        super().__post_init__()
        if not isinstance(self.backbone, MobileNetV2Config) or not isinstance(self.head, LitePoseHeadConfig):
            raise PoseforgeError(f"SupernetConfig: a litepose-mobilenetv2 backbone and a litepose-fusion head are "
                                 f"needed, got {self.backbone.type} and {self.head.type}")
        if self.sandwich_random < 0:
            raise PoseforgeError(f"SupernetConfig.sandwich_random: expected >= 0, got {self.sandwich_random}")
        SubnetSpace(self.space, self.backbone, self.head)  # the space must fit the largest architecture


MODEL_CONFIGS.register("litepose-supernet", SupernetConfig)


def litepose_supernet_config(keypoint_set: str = "crowdpose14") -> SupernetConfig:
    """The official LitePose supernet (``pose_supermobilenet.py`` + ``supermobile.yaml``) with the default
    :class:`SearchSpace`."""
    return SupernetConfig(
        name="litepose-supernet",
        backbone=MobileNetV2Config(widths=(32, 64, 96, 160), depths=LITEPOSE_SUPERNET_DEPTHS, stem_channels=24),
        head=LitePoseHeadConfig(deconv_channels=(64, 48, 32)),
        codec={"name": "associative-embedding", "input_size": [512, 512], "hr_heatmaps": True},
        keypoint_set=keypoint_set)


MODELS.register("litepose-supernet", litepose_supernet_config)


# ---------------------------------------------------------------------------------------------- elastic layers
def _bn(x: Tensor, bn: nn.BatchNorm2d, channels: int, update: bool) -> Tensor:
    """BatchNorm over the first ``channels`` of ``bn``. In training, ``update`` says whether this pass may
    move the running statistics (the largest subnet's) or normalizes with its batch statistics only."""
    c = channels
    weight, bias = bn.weight[:c], bn.bias[:c]
    if not bn.training:
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], weight, bias, False, 0.0, bn.eps)
    if not update:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, bn.eps)
    momentum = bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative average, as nn.BatchNorm2d
            momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], weight, bias, True, momentum, bn.eps)


class ElasticMobileNetV2(LitePoseMobileNetV2):
    """The largest ``litepose-mobilenetv2`` (same modules and names) plus OFA's kernel transformation
    matrices (``kernel_transforms["{stage}_{block}_{k}to{k'}"]``); ``forward_subnet`` runs any subnet."""

    def __init__(self, config: MobileNetV2Config, input_size: tuple[int, int] = (256, 256),
                 space: SearchSpace | None = None) -> None:
        super().__init__(config, input_size)
        space = space or SearchSpace(kernel_sizes=(max(config.kernel_sizes),))
        self.kernel_chain = tuple(sorted(set(space.kernel_sizes), reverse=True))  # 7, 5, 3: each from the last
        self.kernel_transforms = nn.ParameterDict()
        if space.kernel_transform:
            for i, stage in enumerate(self.stage):
                for b in range(len(stage)):
                    for big, small in zip(self.kernel_chain, self.kernel_chain[1:]):
                        self.kernel_transforms[f"{i}_{b}_{big}to{small}"] = nn.Parameter(torch.eye(small * small))

    def depthwise_weight(self, stage: int, block: int, kernel: int, channels: int) -> Tensor:
        """The ``[channels, 1, kernel, kernel]`` depthwise weight of a block for a subnet: the centre of the
        largest kernel, passed through the transformation matrix of every step down the kernel chain."""
        weight = self.stage[stage][block].depth_conv[0].weight[:channels]
        size = weight.shape[-1]
        if kernel == size:
            return weight
        if not self.kernel_transforms:  # the plain centre crop
            start = (size - kernel) // 2
            return weight[:, :, start:start + kernel, start:start + kernel]
        for big, small in zip(self.kernel_chain, self.kernel_chain[1:]):
            if small < kernel:
                break
            start = (big - small) // 2
            weight = weight[:, :, start:start + small, start:start + small]
            matrix = self.kernel_transforms[f"{stage}_{block}_{big}to{small}"]
            weight = F.linear(weight.reshape(channels, 1, small * small), matrix).reshape(channels, 1, small, small)
        return weight

    def forward_subnet(self, images: Tensor, subnet: Subnet, update_stats: bool = True) -> list[Tensor]:
        """The maps of ``out_indices`` for ``subnet`` (the same layers as a plain model of its widths)."""
        first = self.first
        x = F.relu6(_bn(first[0][0](images), first[0][1], first[0][1].num_features, update_stats))
        x = F.relu6(_bn(first[1][0](x), first[1][1], first[1][1].num_features, update_stats))
        c_in = subnet.stem_channels
        x = _bn(F.conv2d(x, first[2].weight[:c_in]), first[3], c_in, update_stats)
        levels = [x]
        for i, stage in enumerate(self.stage[:self.last_index]):
            width, kernel, expand = subnet.widths[i], subnet.kernel_sizes[i], subnet.expand_ratios[i]
            for b in range(subnet.depths[i]):
                block = stage[b]
                stride = self.config.strides[i] if b == 0 else 1
                mid = make_divisible(round(c_in * expand), 8)
                out = F.relu6(_bn(F.conv2d(x, block.inv[0].weight[:mid, :c_in]), block.inv[1], mid, update_stats))
                out = F.conv2d(out, self.depthwise_weight(i, b, kernel, mid), None, stride, kernel // 2, 1, mid)
                out = F.relu6(_bn(out, block.depth_conv[1], mid, update_stats))
                out = _bn(F.conv2d(out, block.point_conv[0].weight[:width, :mid]), block.point_conv[1], width, update_stats)
                x = out + x if stride == 1 and c_in == width else out  # the plain block's residual rule
                c_in = width
            levels.append(x)
        return [levels[i] for i in self.config.out_indices]


class ElasticLitePoseHead(LitePoseHead):
    """The largest ``litepose-fusion`` head (same modules and names); ``forward_subnet`` runs it with the
    subnet's deconvolution widths on the subnet's backbone maps (whose widths it reads from them)."""

    def forward_subnet(self, features: Sequence[Tensor], deconv_channels: Sequence[int],
                       update_stats: bool = True) -> HeatmapsTags:
        n = len(self.config.deconv_channels)
        levels = list(features)[::-1][:n + 2]  # deepest first
        x = levels[0]
        outputs = []
        for i in range(n):
            c, lateral = deconv_channels[i], levels[i + 1]
            refined, raw = self.deconv_refined[i], self.deconv_raw[i]
            y = F.conv_transpose2d(x, refined.weight[:x.shape[1], :c], None, refined.stride, refined.padding,
                                   refined.output_padding)
            y = y + F.conv_transpose2d(lateral, raw.weight[:lateral.shape[1], :c], None, raw.stride, raw.padding,
                                       raw.output_padding)
            x = F.relu(_bn(y, self.deconv_bnrelu[i][0], c, update_stats))
            j = i - (n - 2)
            if j >= 0:
                outputs.append(_separable(self.final_refined[j], x, update_stats)
                               + _separable(self.final_raw[j], levels[i + 2], update_stats))
        k = self.num_keypoints
        return HeatmapsTags(heatmaps=outputs[0][:, :k], tags=outputs[0][:, k:], heatmaps_hr=outputs[1])


def _separable(module: SeparableConv, x: Tensor, update_stats: bool) -> Tensor:
    depthwise, bn, _, pointwise = module.conv
    c = x.shape[1]
    y = F.conv2d(x, depthwise.weight[:c], None, depthwise.stride, depthwise.padding, depthwise.dilation, c)
    return F.conv2d(F.relu(_bn(y, bn, c, update_stats)), pointwise.weight[:, :c])


# ---------------------------------------------------------------------------------------------- the estimator
@ESTIMATORS.register("litepose-supernet")
class LitePoseSupernet(BottomUpEstimator):
    """A once-for-all LitePose supernet (see the module doc): a bottom-up estimator whose ``set_active(subnet)``
    picks the architecture and input resolution it runs, trained with the sandwich rule."""

    config_class = SupernetConfig

    def __init__(self, config: SupernetConfig) -> None:
        super().__init__(config)
        # the elastic parts replace the plain ones (same modules, names and shapes, plus kernel transforms)
        self.backbone = ElasticMobileNetV2(config.backbone, config.input_size, config.space)
        self.head = ElasticLitePoseHead(config.head, self.backbone.feature_info, self.keypoint_set.num_keypoints,
                                        config.input_size)
        self.subnets = SubnetSpace(config.space, config.backbone, config.head)
        # micro-batches trained so far: the random subnets of the next one come from (sampler_seed, this)
        self.register_buffer("sandwich_draws", torch.zeros((), dtype=torch.int64))
        self._largest = self.subnets.largest()
        self._active = self._largest
        self._codecs: dict[int, Any] = {}

    # ----- the active subnet
    @property
    def active(self) -> Subnet:
        """The subnet ``forward`` / ``predict`` / ``transform`` / ``codec`` use (the largest by default)."""
        return self._active

    def set_active(self, subnet: "Subnet | Mapping[str, Any] | str") -> "LitePoseSupernet":
        """Run ``subnet`` from now on (a :class:`Subnet`, its dict, ``"largest"`` or ``"smallest"``)."""
        if subnet == "largest":
            subnet = self.subnets.largest()
        elif subnet == "smallest":
            subnet = self.subnets.smallest()
        self._active = self.subnets.check(subnet)  # type: ignore[arg-type]
        return self

    @property
    def input_size(self) -> tuple[int, int]:
        """The active subnet's square input."""
        return (self._active.resolution, self._active.resolution)

    @property
    def codec(self) -> Any:
        """The grouping codec at the active subnet's resolution."""
        return self.codec_for(self._active.resolution)

    def codec_for(self, resolution: int) -> Any:
        """The config's codec for inputs of ``resolution`` (one per resolution, made on first use)."""
        if resolution not in self._codecs:
            from ...codecs import create_codec

            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.config.codec.items()
                      if k != "heatmap_size"}
            kwargs["input_size"] = (resolution, resolution)
            self._codecs[resolution] = create_codec(**kwargs)
        return self._codecs[resolution]

    @property
    def has_unused_parameters(self) -> bool:
        # a step's subnets need not touch every kernel transformation matrix (DDP must look for unused ones)
        return True

    def macs(self, subnet: "Subnet | None" = None, convention: str = "ptflops") -> int:
        """MACs of ``subnet`` (default: the active one) at its resolution, in closed form."""
        return subnet_macs(self.config, subnet or self._active, convention)

    # ----- forward and the sandwich rule
    def _sandwich_step(self) -> bool:
        return self.training and self.config.sandwich and torch.is_grad_enabled()

    def forward(self, images: Tensor, task: Any = None) -> HeatmapsTags:
        subnet = self._largest if self._sandwich_step() else self._active
        return self.run_subnet(images.to(self.dtype), subnet, update_stats=True)

    def run_subnet(self, images: Tensor, subnet: Subnet, update_stats: bool = True) -> HeatmapsTags:
        """``subnet``'s outputs for normalized ``images`` (resized to its resolution when they differ)."""
        side = subnet.resolution
        if tuple(images.shape[-2:]) != (side, side):
            images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        features = self.backbone.forward_subnet(images, subnet, update_stats)
        return self.head.forward_subnet(features, subnet.deconv_channels, update_stats)

    def sandwich_subnets(self) -> list[Subnet]:
        """The smallest subnet and ``sandwich_random`` random ones for the next micro-batch (advances the draw count)."""
        draw = int(self.sandwich_draws)
        self.sandwich_draws.add_(1)
        rng = random.Random(mix_seed(self.config.sampler_seed, draw))
        return [self.subnets.smallest()] + [self.subnets.sample(rng) for _ in range(self.config.sandwich_random)]

    def loss(self, outputs: HeatmapsTags, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The active subnet's loss; in a sandwich step (training, gradients on) the largest subnet's (``outputs``)
        plus the smallest's and the random ones', logged as ``largest`` / ``smallest`` / ``random`` (their mean)."""
        if not self._sandwich_step():
            return self._loss_at(outputs, batch, self._active.resolution)
        largest = self._loss_at(outputs, batch, self._largest.resolution)["loss"]
        total, parts = largest, {"largest": largest.detach()}
        images = self.normalize(batch["image"])
        if self.backbone.first[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)  # as the Trainer's (CPU depthwise: NHWC)
        randoms = []
        for i, subnet in enumerate(self.sandwich_subnets()):
            out = self.run_subnet(images, subnet, update_stats=False).float()
            term = self._loss_at(out, batch, subnet.resolution)["loss"]
            total = total + term
            if i == 0:
                parts["smallest"] = term.detach()
            else:
                randoms.append(term.detach())
        if randoms:
            parts["random"] = torch.stack(randoms).mean()
        return {"loss": total, **parts}

    def _loss_at(self, outputs: HeatmapsTags, batch: Mapping[str, Any], resolution: int) -> dict[str, Tensor]:
        """The loss of outputs at ``resolution`` against ``batch`` (keypoints scaled from the batch's inputs)."""
        height, width = batch["image"].shape[-2:]
        fields = dict(batch)
        if (height, width) != (resolution, resolution):  # the whole input resized: pixel-centre scaling
            kp = torch.as_tensor(batch["keypoints"])
            scale = kp.new_tensor([resolution / width, resolution / height])
            fields["keypoints"] = (kp + 0.5) * scale - 0.5
        return self._loss_terms(outputs, self.codec_for(resolution).encode(fields))


# ---------------------------------------------------------------------------------------------- extraction
def subnet_config(config: SupernetConfig, subnet: Subnet, name: str | None = None) -> BottomUpConfig:
    """The plain ``BottomUpConfig`` (litepose-mobilenetv2 + litepose-fusion) of ``subnet`` of a supernet."""
    backbone = dataclasses.replace(config.backbone, widths=tuple(subnet.widths), depths=tuple(subnet.depths),
                                   kernel_sizes=tuple(subnet.kernel_sizes),
                                   expand_ratios=tuple(float(e) for e in subnet.expand_ratios),
                                   stem_channels=subnet.stem_channels)
    head = dataclasses.replace(config.head, deconv_channels=tuple(subnet.deconv_channels))
    side = subnet.resolution
    codec = {k: v for k, v in config.codec.items() if k != "heatmap_size"}
    codec["input_size"] = [side, side]
    return BottomUpConfig(backbone=backbone, head=head, codec=codec, name=name or f"{config.name}-subnet",
                          keypoint_set=config.keypoint_set, input_size=(side, side), mean=config.mean, std=config.std,
                          flip_test=config.flip_test)


def subnet_macs(config: SupernetConfig, subnet: Subnet, convention: str = "ptflops") -> int:
    """MACs of ``subnet`` of a supernet at its resolution (closed form, equal to ``count_macs`` of the
    extracted model under the same convention)."""
    from ...keypoints import get_keypoint_set

    plain = subnet_config(config, subnet)
    return litepose_macs(plain.backbone, plain.head, get_keypoint_set(plain.keypoint_set).num_keypoints,
                         plain.input_size, convention)


_DEPTHWISE = re.compile(r"^backbone\.stage\.(\d+)\.(\d+)\.depth_conv\.0\.weight$")


@torch.no_grad()
def extract_subnet(supernet: LitePoseSupernet, subnet: "Subnet | Mapping[str, Any] | None" = None,
                   name: str | None = None) -> Estimator:
    """A plain bottom-up LitePose model of ``subnet`` (default: the active one) holding exactly the weights the
    supernet runs it with (sliced channels, the first blocks, transformed depthwise kernels, BatchNorm running
    statistics), in eval mode on the supernet's device and dtype."""
    subnet = supernet.active if subnet is None else supernet.subnets.check(subnet)
    config = subnet_config(supernet.config, subnet, name)
    with torch.device("meta"), skip_meta_init():
        shapes = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    source = supernet.state_dict()
    state = {}
    for key, shape in shapes.items():
        if key not in source:
            raise PoseforgeError(f"extract_subnet: the supernet has no tensor {key} (not a LitePose supernet?)")
        match = _DEPTHWISE.match(key)
        if match:
            tensor = supernet.backbone.depthwise_weight(int(match[1]), int(match[2]), shape[-1], shape[0])
        else:
            tensor = source[key][tuple(slice(0, s) for s in shape)]
        if tuple(tensor.shape) != shape:
            raise PoseforgeError(f"extract_subnet: {key} is {list(tensor.shape)} in the supernet, the subnet needs {list(shape)}")
        state[key] = tensor.detach().clone(memory_format=torch.contiguous_format)
    return model_from_state_dict(config, state, f"{supernet.config.name} subnet {subnet.key()}", supernet.pixel_mean.device)
