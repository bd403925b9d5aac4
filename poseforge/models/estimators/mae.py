"""Masked-autoencoder pretraining of the ViT backbone (MAE, He et al. 2022; Sapiens' human-image pretraining).

An :class:`MAEEstimator` is the estimator kind ``mae``: the same protocol as the pose and dense kinds, so the
one Trainer pretrains it (``poseforge pretrain``). Per sample, a random ``mask_ratio`` of the patch tokens is
hidden (an argsort of uniform noise: exactly ``L - int(L * (1 - mask_ratio))`` masked, no per-sample loop);
the encoder - poseforge's :class:`~poseforge.models.backbones.vit.VisionTransformer` through
:meth:`~poseforge.models.backbones.vit.VisionTransformer.forward_visible` - runs on the visible tokens only,
position embeddings added before the subset is taken; a light transformer decoder gets them back in grid order
with a learned mask token in every hidden place, adds its own fixed 2-D sine-cosine position embeddings (as
MAE and Sapiens' ``MAEPretrainDecoder``: not learned, so the decoder cannot memorise positions and they need
no parameters or weight decay) and predicts the ``patch_size**2 * 3`` normalized pixels of every patch. The
loss is the MSE on the masked patches only, against per-patch normalized pixels (``norm_pix_loss``: each
target patch minus its mean over its pixels and channels, divided by its standard deviation).

The encoder is a plain ViT: ``backbone.*`` weights of a pretraining run load into any task model with the
same ViT widths (``TrainConfig.model.backbone_init``; position embeddings resized to the task's grid). The
encoder starts from, and keeps, MAE's fixed sine-cosine position embeddings (``fixed_pos_embed``).

Named configs (``sapiens-{tiny,0.3b,0.6b,1b,2b}-mae``) live in :mod:`poseforge.models.zoo`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ...data.augment import AugmentConfig
from ...data.image_transform import ImageTransform
from ...errors import PoseforgeError
from ...outputs import HeadOutput, Predictions
from ...registry import BACKBONES, ESTIMATORS, MODEL_CONFIGS
from ..backbones.vit import Block, ViTConfig, sincos_pos_embed
from ..config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, ModelConfig
from .base import Estimator, Stage

__all__ = ["MAEConfig", "MAEEstimator", "MAEOutput", "MAEDecoder", "MAE_AUGMENT", "patchify", "unpatchify",
           "random_masking", "norm_pix_targets", "visible_count"]

# Whole images, light augmentation: a mirror, a mild zoom (in or out) and shift; no rotation, no colour.
# (Sapiens: RandomResizedCrop with crop area 0.2-1.0 and a flip.)
MAE_AUGMENT = AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_factor=0.1, shift_prob=0.5,
                            scale_factor=(0.7, 1.1), scale_prob=1.0, rotate_prob=0.0)


@dataclasses.dataclass
class MAEOutput(HeadOutput):
    """``pred [B, L, patch_size**2 * 3]`` predicted (normalized) pixels of every patch, row-major token order;
    ``mask [B, L]`` 1.0 where the patch was hidden from the encoder, 0.0 where it was seen."""

    pred: torch.Tensor
    mask: torch.Tensor


pytree.register_dataclass(MAEOutput)


@dataclasses.dataclass(frozen=True)
class MAEConfig(ModelConfig):
    """A masked autoencoder: a ViT encoder (``backbone``) and a pixel decoder.

    Attributes:
        backbone: the encoder's :class:`~poseforge.models.backbones.vit.ViTConfig`: full attention, a patchify
            stem without padding (a token is exactly its pixel patch) and no experts or knowledge tokens.
        mask_ratio: share of the patch tokens hidden per sample (MAE / Sapiens: 0.75; 0.75-0.95 is the useful
            range); at least one token stays visible and one hidden.
        decoder_dim, decoder_depth, decoder_heads, decoder_mlp_ratio: the decoder's width, blocks, heads and
            MLP ratio (Sapiens / MAE: 512, 8, 16, 4).
        norm_pix_loss: regress per-patch normalized pixels (MAE's better representation) instead of the
            normalized image's pixels.
        fixed_pos_embed: the encoder's position embeddings are MAE's fixed 2-D sine-cosine ones (not trained);
            ``False``: initialized so and trained.
        name, input_size, mean, std, flip_test: as the other model configs (``input_size`` must be a multiple of
            the patch size).
    """

    backbone: BackboneConfig
    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True
    fixed_pos_embed: bool = True
    name: str = "custom"
    input_size: tuple[int, int] = (192, 256)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_test: bool = False
    type: str = "mae"

    def __post_init__(self) -> None:
        b = self.backbone
        problems = []
        if not isinstance(b, ViTConfig):
            raise PoseforgeError(f"MAEConfig.backbone: MAE pretrains a ViT ('vit'), got '{getattr(b, 'type', b)}'")
        if not (isinstance(self.mask_ratio, (int, float)) and 0.0 < self.mask_ratio < 1.0):
            problems.append(f"mask_ratio: expected a value in (0, 1) (MAE: 0.75, useful up to 0.95), got {self.mask_ratio}")
        if b.stem != "patch" or b.patch_padding != 0:
            problems.append(f"backbone: MAE needs the patchify stem without padding (stem='patch', patch_padding=0), "
                            f"got stem={b.stem!r}, patch_padding={b.patch_padding}")
        if b.attention != "full" or b.global_blocks or b.num_experts != 1 or b.knowledge_tokens:
            problems.append("backbone: MAE needs full attention, one expert and no knowledge tokens")
        w, h = self.input_size
        if min(w, h) <= 0 or w % b.patch_size or h % b.patch_size:
            problems.append(f"input_size: expected positive multiples of patch_size {b.patch_size}, got {list(self.input_size)}")
        if self.decoder_dim <= 0 or self.decoder_depth <= 0 or self.decoder_heads <= 0 or self.decoder_dim % 4 \
                or self.decoder_dim % self.decoder_heads or self.decoder_mlp_ratio <= 0:
            problems.append(f"decoder: expected a width divisible by 4 and by decoder_heads, depth >= 1, got "
                            f"decoder_dim={self.decoder_dim}, decoder_depth={self.decoder_depth}, "
                            f"decoder_heads={self.decoder_heads}, decoder_mlp_ratio={self.decoder_mlp_ratio}")
        if not problems:
            tokens = (w // b.patch_size) * (h // b.patch_size)
            keep = visible_count(tokens, self.mask_ratio)
            if not 1 <= keep < tokens:
                problems.append(f"mask_ratio: {self.mask_ratio} leaves {keep} of {tokens} tokens visible; "
                                "at least one must be visible and one hidden")
        if problems:
            raise PoseforgeError("invalid MAE config: " + "; ".join(problems))

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(rows, cols)``."""
        p = self.backbone.patch_size
        return self.input_size[1] // p, self.input_size[0] // p


MODEL_CONFIGS.register("mae", MAEConfig)


# ---------------------------------------------------------------------------------------------- functions
def visible_count(num_tokens: int, mask_ratio: float) -> int:
    """Tokens the encoder sees: ``int(L * (1 - mask_ratio))`` (MAE's rounding)."""
    return int(num_tokens * (1.0 - mask_ratio))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, L, p * p * C]``: row-major patches (the ViT's token order), pixels ``(y, x, c)``."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, L, p * p * C] -> [B, C, rows * p, cols * p]``."""
    rows, cols = grid
    p = patch_size
    x = patches.reshape(patches.shape[0], rows, cols, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(patches.shape[0], channels, rows * p, cols * p)


def norm_pix_targets(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch (last dim) minus its mean, over its (unbiased) standard deviation: MAE's ``norm_pix_loss``."""
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def random_masking(noise: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking from ``noise [B, L]`` (the lowest ``int(L * (1 - mask_ratio))`` are kept).

    Returns ``keep [B, n]`` (token indices the encoder sees, in noise order), ``mask [B, L]`` (1.0 hidden,
    0.0 visible) and ``restore [B, L]`` (the permutation that puts ``visible + mask tokens`` back in grid order)."""
    b, length = noise.shape
    n = visible_count(length, mask_ratio)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    keep = shuffle[:, :n]
    mask = torch.ones(b, length, device=noise.device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask, restore


# ---------------------------------------------------------------------------------------------- modules
class MAEDecoder(nn.Module):
    """Visible tokens -> pixels of every patch: a linear to ``dim``, mask tokens in the hidden places, fixed
    sine-cosine positions (passed in, a buffer of the estimator), pre-norm blocks, a norm and a linear to
    ``patch_pixels``."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, patch_pixels: int,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))  # 1-D: no weight decay (as MAE's mask token)
        self.blocks = nn.ModuleList(Block(dim, heads, int(dim * mlp_ratio), True, eps, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pred = nn.Linear(dim, patch_pixels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """MAE's initialization: Xavier-uniform linears with zero bias, unit LayerNorms, normal(0.02) mask token."""
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, visible: torch.Tensor, restore: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        x = self.embed(visible)
        b, n, d = x.shape
        length = restore.shape[1]
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(b, length - n, d)], dim=1)
        x = torch.gather(x, 1, restore[..., None].expand(-1, -1, d)) + pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x, (0, 0), None)  # (full attention: no grid needed)
        return self.pred(self.norm(x))


@ESTIMATORS.register("mae")
class MAEEstimator(Estimator):
    """MAE pretraining model: ``backbone`` (the ViT encoder, on visible tokens) + ``decoder``. See the module doc."""

    config_class = MAEConfig
    kind = "mae"
    needs_boxes = False

    def __init__(self, config: MAEConfig) -> None:
        super().__init__(config)
        b = config.backbone
        self.backbone = BACKBONES.get(b.type)(b, input_size=config.input_size)
        self.decoder = MAEDecoder(b.embed_dim, config.decoder_dim, config.decoder_depth, config.decoder_heads,
                                  config.decoder_mlp_ratio, b.patch_size ** 2 * b.in_channels, b.layer_norm_eps)
        if config.fixed_pos_embed:
            self.backbone.pos_embed.requires_grad_(False)
        self.reset_pos_embed()

    @torch.no_grad()
    def reset_pos_embed(self) -> None:
        """The encoder's position embeddings set to MAE's 2-D sine-cosine layout."""
        rows, cols = self.backbone.pos_grid
        pos = self.backbone.pos_embed
        pos.copy_(sincos_pos_embed(rows, cols, pos.shape[-1]).to(pos.dtype).unsqueeze(0))

    def _init_buffers(self, device: torch.device | str | None = None) -> None:
        super()._init_buffers(device)
        rows, cols = self.config.grid
        pos = sincos_pos_embed(rows, cols, self.config.decoder_dim).to(device).unsqueeze(0)
        self.register_buffer("decoder_pos_embed", pos, persistent=False)

    @property
    def patch_size(self) -> int:
        return int(self.config.backbone.patch_size)

    @property
    def num_tokens(self) -> int:
        rows, cols = self.config.grid
        return rows * cols

    # ----- the protocol -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, task: Any = None, *, noise: torch.Tensor | None = None) -> MAEOutput:
        """Normalized images ``[B, 3, H, W]`` (the input size) -> :class:`MAEOutput`. The mask comes from
        ``noise [B, L]`` (default: uniform noise from the global RNG, which training checkpoints restore)."""
        b = images.shape[0]
        if tuple(images.shape[-2:]) != (self.input_size[1], self.input_size[0]):
            raise PoseforgeError(f"{self.config.name}: expected {self.input_size[0]}x{self.input_size[1]} inputs, got "
                                 f"{images.shape[-1]}x{images.shape[-2]}")
        if noise is None:
            noise = torch.rand(b, self.num_tokens, device=images.device)
        keep, mask, restore = random_masking(noise, self.config.mask_ratio)
        latent = self.backbone.forward_visible(images.to(self.dtype), keep)
        return MAEOutput(self.decoder(latent, restore, self.decoder_pos_embed), mask)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Regression targets ``[B, L, p*p*3]`` of normalized images (per-patch normalized with ``norm_pix_loss``)."""
        patches = patchify(images.float(), self.patch_size)
        return norm_pix_targets(patches) if self.config.norm_pix_loss else patches

    def transform(self, train: bool, augment: "bool | AugmentConfig | None" = None,
                  task: "int | str | None" = 0) -> ImageTransform:
        """Whole images fitted into the input size, no labels (training: :data:`MAE_AUGMENT` unless given)."""
        self.task_index(task)
        if not train:
            return ImageTransform(self.input_size, None, augment=False, ignore_mask=False)
        return ImageTransform(self.input_size, None, augment=MAE_AUGMENT if augment in (None, True) else augment,
                              ignore_mask=False)

    def build_criterion(self, config: Any) -> nn.Module:
        """No codec, no loss settings: :meth:`loss` is MAE's pixel MSE (the ``loss`` section does not apply)."""
        return nn.Identity()

    def loss(self, outputs: HeadOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Mean squared error over the pixels of the hidden patches only."""
        target = self.targets(self.normalize(batch["image"]))
        per_patch = (outputs.pred.float() - target).pow(2).mean(-1)
        mask = outputs.mask.float()
        return {"loss": (per_patch * mask).sum() / mask.sum().clamp(min=1.0)}

    def predict(self, images: Any, boxes: Any = None, *, flip_test: bool | None = None, task: "int | str | None" = 0,
                batch_size: int | None = None, on_stage: Stage = None) -> Predictions:
        raise PoseforgeError(f"{self.config.name} is an MAE pretraining model: it reconstructs pixels, it predicts no "
                             "poses; fine-tune its encoder (model.backbone_init) or call reconstruct()")

    def predict_batch(self, batch: Mapping[str, Any], *, flip_test: bool | None = None,
                      task: "int | str | None" = 0) -> Predictions:
        return self.predict(batch)

    def metric(self, eval_set: Any, task: "int | str | None" = 0, **options: Any) -> Any:
        raise PoseforgeError(f"{self.config.name}: MAE pretraining has no validation metric; set val_interval=0")

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
        """Masked and reconstructed versions of uint8 / 0-255 images ``[B, 3, H, W]`` at the input size (one
        random mask per image from ``seed``), all uint8 ``[B, 3, H, W]``: ``original``, ``masked`` (hidden
        patches grey) and ``reconstruction`` (hidden patches predicted, visible ones as given). With
        ``norm_pix_loss`` the predictions are per-patch normalized; each is mapped back with its true patch's
        mean and standard deviation (as MAE's visualizations do)."""
        x = self.normalize(images)
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
        noise = torch.rand(x.shape[0], self.num_tokens, generator=generator, device=x.device)
        was_training = self.training
        self.eval()
        try:
            out = self(x, noise=noise)
        finally:
            self.train(was_training)
        patches = patchify(x.float(), self.patch_size)
        pred = out.pred.float()
        if self.config.norm_pix_loss:
            pred = pred * (patches.var(-1, keepdim=True) + 1e-6).sqrt() + patches.mean(-1, keepdim=True)
        hidden = out.mask.bool()[..., None]
        grey = ((torch.full_like(self.pixel_mean, 128.0) - self.pixel_mean) / self.pixel_std)
        grey_patches = patchify(grey.expand_as(x).float(), self.patch_size)
        grid = self.config.grid

        def pixels(p: torch.Tensor) -> torch.Tensor:
            image = unpatchify(p, self.patch_size, grid) * self.pixel_std + self.pixel_mean
            return image.round().clamp(0, 255).to(torch.uint8)

        return {"original": pixels(patches), "masked": pixels(torch.where(hidden, grey_patches, patches)),
                "reconstruction": pixels(torch.where(hidden, pred, patches)), "mask": out.mask}
