"""The once-for-all search space of LitePose: which subnets a supernet holds, how they are drawn, mutated
and crossed, and what each costs in multiply-accumulates without building it.

A :class:`Subnet` names one architecture inside a supernet: its input ``resolution`` (square), the stem's
output channels, each stage's width, depth (its first ``d`` blocks), depthwise kernel and expansion, and each
fusion deconvolution's width. :class:`SearchSpace` (a part of the supernet config) lists the choices; widths
are the largest architecture's widths times ``width_mults``, rounded to multiples of 8 as LitePose's
``arch_manager.py`` does (``_make_divisible(c * mult, 8)``), never above the largest.

The defaults are LitePose's search space (mit-han-lab/litepose ``arch_manager.py`` / ``pose_supermobilenet.py``):
square inputs 256 / 320 / 384 / 448 / 512 and width multipliers 1 / 0.75 / 0.5 / 0.25 for the stem, every stage
and every deconvolution of the supernet (stem 24, stages 32 / 64 / 96 / 160, deconvolutions 64 / 48 / 32; the
four published LitePose-Auto models are all points of it), plus OFA's elastic depth (each stage keeps its first
``max - 2``, ``max - 1`` or ``max`` blocks) and elastic kernel (7 / 5 / 3, smaller kernels the centre of the 7x7
one through OFA's kernel transformation matrices).

:class:`SubnetSpace` is the space bound to a supernet's largest architecture: ``largest()``, ``smallest()``,
``sample(rng)``, ``mutate(subnet, rng, prob)``, ``crossover(a, b, rng)`` (per gene, as OFA's and LitePose's
``EvolutionFinder``) and ``check(subnet)``. :func:`litepose_macs` counts a LitePose architecture's MACs in closed
form under each :func:`~poseforge.models.complexity.count_macs` convention (tested equal to the counter on built
models), so a search can price thousands of candidates in milliseconds.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Iterator, Mapping, Sequence

from ...errors import PoseforgeError
from ..backbones.mobilenetv2 import MobileNetV2Config, make_divisible
from ..config import ConfigBase
from ..heads.bottomup import LitePoseHeadConfig

__all__ = ["SearchSpace", "Subnet", "SubnetSpace", "litepose_macs", "mix_seed", "LITEPOSE_SUPERNET_DEPTHS"]

# The official supernet's stage depths (pose_supermobilenet.py): 6 / 8 / 10 / 10 blocks.
LITEPOSE_SUPERNET_DEPTHS = (6, 8, 10, 10)

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64 of their combination): draws keyed by ``(seed, counter)``
    need no stored generator state."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


@dataclasses.dataclass(frozen=True)
class SearchSpace(ConfigBase):
    """The elastic dimensions of a LitePose supernet (choices per gene; see the module doc).

    Attributes:
        resolutions: square input sides (multiples of the backbone's total stride, 16); the largest is the
            supernet's ``input_size``.
        width_mults: multipliers of the largest widths (stem, stages, deconvolutions), each in (0, 1].
        depths: per stage, the block counts a subnet may keep (its first ``d`` blocks); the largest is the
            supernet's depth of that stage.
        kernel_sizes: depthwise kernels (odd); the largest is the supernet's kernel.
        expand_ratios: inverted-residual expansions; the largest is the supernet's.
        kernel_transform: smaller kernels through OFA's learned ``k^2 x k^2`` transformation of the larger
            kernel's centre (identity at initialization); ``False``: the plain centre crop.
    """

    resolutions: tuple[int, ...] = (256, 320, 384, 448, 512)
    width_mults: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    depths: tuple[tuple[int, ...], ...] = ((4, 5, 6), (6, 7, 8), (8, 9, 10), (8, 9, 10))
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[float, ...] = (6.0,)
    kernel_transform: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.resolutions or any(r < 16 or r % 16 for r in self.resolutions):
            problems.append(f"resolutions: expected multiples of 16, got {self.resolutions}")
        if not self.width_mults or any(not 0 < m <= 1 for m in self.width_mults) or max(self.width_mults) != 1:
            problems.append(f"width_mults: expected values in (0, 1] including 1, got {self.width_mults}")
        if not self.depths or any(not d or min(d) < 1 for d in self.depths):
            problems.append(f"depths: expected per-stage choices >= 1, got {self.depths}")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel_sizes: expected odd kernels, got {self.kernel_sizes}")
        if not self.expand_ratios or any(not e > 0 for e in self.expand_ratios):
            problems.append(f"expand_ratios: expected positive ratios, got {self.expand_ratios}")
        if problems:
            raise PoseforgeError("SearchSpace: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class Subnet(ConfigBase):
    """One architecture of a supernet (see the module doc); JSON round trip with ``to_dict`` / ``from_dict``."""

    resolution: int
    stem_channels: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[float, ...]
    deconv_channels: tuple[int, ...]

    def key(self) -> str:
        """A short unique text of the architecture (cache key, logs)."""
        def join(values: Sequence[Any]) -> str:
            return "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

        return (f"r{self.resolution}_s{self.stem_channels}_w{join(self.widths)}_d{join(self.depths)}"
                f"_k{join(self.kernel_sizes)}_e{join(self.expand_ratios)}_h{join(self.deconv_channels)}")


_GENES = ("resolution", "stem_channels", "widths", "depths", "kernel_sizes", "expand_ratios", "deconv_channels")


class SubnetSpace:
    """A :class:`SearchSpace` bound to the supernet's largest architecture: the options of every gene.

    Genes (each with its sorted options): the resolution, the stem width, then per stage its width, depth,
    kernel and expansion, then each deconvolution's width.
    """

    def __init__(self, space: SearchSpace, backbone: MobileNetV2Config, head: LitePoseHeadConfig) -> None:
        n = len(backbone.widths)
        problems = []
        if len(space.depths) != n:
            problems.append(f"depths has {len(space.depths)} stages' choices, the backbone {n} stages")
        else:
            bad = [i for i in range(n) if max(space.depths[i]) != backbone.depths[i]]
            if bad:
                problems.append(f"the largest depth choices {[max(space.depths[i]) for i in bad]} of stage(s) {bad} "
                                f"must be the backbone's depths {[backbone.depths[i] for i in bad]}")
        if set(backbone.kernel_sizes) != {max(space.kernel_sizes)}:
            problems.append(f"every backbone kernel must be the largest kernel choice {max(space.kernel_sizes)}, "
                            f"got {backbone.kernel_sizes}")
        if set(backbone.expand_ratios) != {max(space.expand_ratios)}:
            problems.append(f"every backbone expansion must be the largest choice {max(space.expand_ratios)}, "
                            f"got {backbone.expand_ratios}")
        if problems:
            raise PoseforgeError("SearchSpace does not fit the supernet: " + "; ".join(problems))
        self.space = space
        self.num_stages = n
        self.num_deconvs = len(head.deconv_channels)

        def widths(c: int) -> tuple[int, ...]:  # the largest option is the supernet's own width (multiplier 1)
            return tuple(sorted({c} | {min(c, make_divisible(c * m, 8)) for m in space.width_mults}))

        opts: list[tuple[str, int | None, tuple]] = [("resolution", None, tuple(sorted(set(space.resolutions)))),
                                                      ("stem_channels", None, widths(backbone.stem_channels))]
        for i in range(n):
            opts += [("widths", i, widths(backbone.widths[i])), ("depths", i, tuple(sorted(set(space.depths[i])))),
                     ("kernel_sizes", i, tuple(sorted(set(space.kernel_sizes)))),
                     ("expand_ratios", i, tuple(sorted({float(e) for e in space.expand_ratios})))]
        opts += [("deconv_channels", j, widths(c)) for j, c in enumerate(head.deconv_channels)]
        self.genes = opts

    # ----- building subnets from gene values
    def _build(self, values: Sequence[Any]) -> Subnet:
        fields: dict[str, Any] = {"widths": [None] * self.num_stages, "depths": [None] * self.num_stages,
                                  "kernel_sizes": [None] * self.num_stages, "expand_ratios": [None] * self.num_stages,
                                  "deconv_channels": [None] * self.num_deconvs}
        for (name, index, _), value in zip(self.genes, values):
            if index is None:
                fields[name] = value
            else:
                fields[name][index] = value
        return Subnet(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def values(self, subnet: Subnet) -> list[Any]:
        """The gene values of ``subnet`` (in :attr:`genes` order)."""
        out = []
        for name, index, _ in self.genes:
            value = getattr(subnet, name)
            out.append(value if index is None else value[index])
        return out

    def largest(self) -> Subnet:
        """Every gene at its largest option: the supernet itself."""
        return self._build([options[-1] for _, _, options in self.genes])

    def smallest(self) -> Subnet:
        """Every gene at its smallest option."""
        return self._build([options[0] for _, _, options in self.genes])

    def sample(self, rng: random.Random) -> Subnet:
        """A subnet with every gene drawn uniformly from its options."""
        return self._build([rng.choice(options) for _, _, options in self.genes])

    def mutate(self, subnet: Subnet, rng: random.Random, prob: float) -> Subnet:
        """``subnet`` with each gene redrawn uniformly with probability ``prob``."""
        return self._build([rng.choice(options) if rng.random() < prob else value
                            for (_, _, options), value in zip(self.genes, self.values(subnet))])

    def crossover(self, a: Subnet, b: Subnet, rng: random.Random) -> Subnet:
        """Each gene from ``a`` or ``b`` with equal probability."""
        return self._build([rng.choice((x, y)) for x, y in zip(self.values(a), self.values(b))])

    def size(self) -> int:
        """How many subnets the space holds."""
        return math.prod(len(options) for _, _, options in self.genes)

    def check(self, subnet: Subnet | Mapping[str, Any], where: str = "subnet") -> Subnet:
        """``subnet`` (or its dict) as a :class:`Subnet`, or one :class:`PoseforgeError` listing every gene
        outside the space."""
        if not isinstance(subnet, Subnet):
            if not isinstance(subnet, Mapping):
                raise PoseforgeError(f"{where}: expected a subnet mapping (resolution, widths, ...), got "
                                     f"{type(subnet).__name__}")
            subnet = Subnet.from_dict(subnet, where)
        problems = []
        for name in ("widths", "depths", "kernel_sizes", "expand_ratios", "deconv_channels"):
            want = self.num_deconvs if name == "deconv_channels" else self.num_stages
            if len(getattr(subnet, name)) != want:
                problems.append(f"{name} has {len(getattr(subnet, name))} entries, expected {want}")
        if not problems:
            for (name, index, options), value in zip(self.genes, self.values(subnet)):
                if value not in options:
                    label = name if index is None else f"{name}[{index}]"
                    problems.append(f"{label}={value} not in {list(options)}")
        if problems:
            raise PoseforgeError(f"{where}: outside the search space: " + "; ".join(problems))
        return subnet

    def __iter__(self) -> Iterator[tuple[str, int | None, tuple]]:
        return iter(self.genes)


def litepose_macs(backbone: MobileNetV2Config, head: LitePoseHeadConfig, num_keypoints: int,
                  input_size: Sequence[int], convention: str = "ptflops") -> int:
    """MACs of one image through a LitePose model (``litepose-mobilenetv2`` backbone + ``litepose-fusion`` head)
    at ``input_size`` ``(w, h)``, in closed form, by the rules of ``convention`` (see
    :func:`~poseforge.models.complexity.count_macs`: equal to it on the built model).

    ``"torch"`` / ``"exact"``: convolution weights times output pixels, transposed ones times input pixels;
    ``"hrnet"``: every convolution times output pixels; ``"ptflops"``: as ``"hrnet"`` plus 2 per BatchNorm
    element and 1 per ReLU element.
    """
    from ..complexity import CONVENTIONS  # (here: importing the FLOP counter is not free)

    if convention not in CONVENTIONS:
        raise PoseforgeError(f"litepose_macs: unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    transposed_at_input = convention in ("torch", "exact")
    elementwise = convention == "ptflops"
    w, h = (int(v) for v in input_size)
    total = 0

    def conv(weights: int, pixels: int, in_pixels: int | None = None) -> None:
        nonlocal total
        total += weights * (in_pixels if in_pixels is not None and transposed_at_input else pixels)

    def bn_act(channels: int, pixels: int, bn: bool = True, act: bool = True) -> None:
        nonlocal total
        if elementwise:
            total += channels * pixels * ((2 if bn else 0) + (1 if act else 0))

    size = (math.ceil(w / 2), math.ceil(h / 2))
    px = size[0] * size[1]
    hidden = backbone.stem_hidden
    conv(3 * hidden * 9, px); bn_act(hidden, px)
    conv(hidden * 9, px); bn_act(hidden, px)
    conv(hidden * backbone.stem_channels, px); bn_act(backbone.stem_channels, px, act=False)
    levels = [(backbone.stem_channels, size)]
    c_in = backbone.stem_channels
    for width, depth, stride, kernel, expand in zip(backbone.widths, backbone.depths, backbone.strides,
                                                     backbone.kernel_sizes, backbone.expand_ratios):
        for b in range(depth):
            s = stride if b == 0 else 1
            out = (math.ceil(size[0] / s), math.ceil(size[1] / s))
            px_in, px_out = size[0] * size[1], out[0] * out[1]
            mid = make_divisible(round(c_in * expand), 8)
            conv(c_in * mid, px_in); bn_act(mid, px_in)
            conv(mid * kernel * kernel, px_out); bn_act(mid, px_out)
            conv(mid * width, px_out); bn_act(width, px_out, act=False)
            c_in, size = width, out
        levels.append((width, size))
    n = len(head.deconv_channels)
    deep = levels[::-1][:n + 2]  # deepest first, as the head reads them
    outs = (num_keypoints + num_keypoints * head.tag_dim, num_keypoints)
    running = deep[0][0]
    for i, (channels, kernel) in enumerate(zip(head.deconv_channels, head.deconv_kernel_sizes)):
        lateral, (iw, ih) = deep[i + 1]
        ow, oh = deep[i + 2][1]
        px_in, px_out = iw * ih, ow * oh
        conv(running * channels * kernel * kernel, px_out, px_in)
        conv(lateral * channels * kernel * kernel, px_out, px_in)
        bn_act(channels, px_out)
        running = channels
        j = i - (n - 2)
        if j >= 0:
            k = head.final_kernel_size
            for c in (channels, deep[n + j][0]):  # the refined and the raw separable convolution
                conv(c * k * k, px_out); bn_act(c, px_out)
                conv(c * outs[j], px_out)
    return int(total)
