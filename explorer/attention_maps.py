"""What a ViT's class token attends to: its attention to the patch tokens per head at any block, and rollout.

The weights are the model's own softmax, read by the backbone's source (timm with its fused attention
switched off, transformers with its eager attention: :meth:`~explorer.Backbone.attention_weights`); this
module only turns them into maps. Attention rollout follows Abnar & Zuidema (2020): at each block the mean
over heads plus the identity (the residual path), each row normalised to sum to 1, multiplied through the
blocks from the first to the one asked for; the class token's row of the product, over the patch tokens, is
the map.

Example::

    >>> bb = explorer.load_backbone("vit_small_patch16_224", pretrained=False)
    >>> att = explorer.attention(bb, cat, block="blocks.11", rollout=True)
    >>> att.maps.shape, att.prefix_share.shape, att.rollout.shape
    (torch.Size([6, 14, 14]), torch.Size([6]), torch.Size([14, 14]))
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import torch

from ._args import backbone as _backbone
from ._args import shown
from .errors import AttentionError, InvalidArgumentError
from .images import ImageInput

__all__ = ["Attention", "attention", "attention_rollout"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attention:
    """A ViT's class-token attention at one block, for one image (see :func:`attention`).

    Attributes:
        maps: ``(heads, h, w)``: the class token's attention to each patch token, per head.
        prefix_share: ``(heads,)``: what each head's class token gave the prefix tokens instead (itself, the
            distillation and register tokens); ``maps[i].sum() + prefix_share[i] == 1``.
        prefix_attention: ``(heads, P)``: the same, per prefix token.
        prefix_tokens: the prefix tokens' names, in token order (``"class"``, ``"distillation"``,
            ``"register 0"``, ...).
        rollout: ``(h, w)`` with ``rollout=True``: the class token's row of the rollout over the patch tokens
            (it sums to 1 with the prefix tokens' share); else None.
        block: the block read.
    """

    maps: torch.Tensor
    prefix_share: torch.Tensor
    prefix_attention: torch.Tensor
    prefix_tokens: tuple[str, ...]
    rollout: torch.Tensor | None
    block: str


def attention_rollout(weights: list[torch.Tensor], token: int | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema): ``R = Â_L ... Â_1`` with ``Â = norm(mean_heads(A) + I)``.

    Args:
        weights: per block, first to last, ``(heads, N, N)`` softmax weights of one image.
        token: give only this token's row of ``R`` (``(N,)``), as a vector times each ``Â`` from the last
            block down: ``N`` times fewer operations than the whole product (what :func:`attention` needs).

    Returns:
        ``(N, N)``: row ``q`` is how much of token ``q``'s final state flows from each input token; ``(N,)``
        with ``token``: that row.

    Example::

        >>> attention_rollout([torch.full((2, 3, 3), 1 / 3)]).sum(-1)
        tensor([1., 1., 1.])
        >>> attention_rollout([torch.full((2, 3, 3), 1 / 3)] * 2, token=0)
        tensor([0.5000, 0.2500, 0.2500])
    """
    rolled = None
    for block in reversed(weights):  # each block's Â made alone: only one (N, N) matrix at a time
        hat = block.float().mean(0)
        hat.diagonal().add_(1)  # + I: the residual path
        hat /= hat.sum(-1, keepdim=True)
        if rolled is None:
            rolled = hat[token] if token is not None else hat
        else:
            rolled = rolled @ hat  # R_L...R_l+1 times Â_l: the product from the last block down
    return rolled


def _block(block: object, blocks: list[str]) -> str:
    if block is None:
        return blocks[-1]
    if isinstance(block, numbers.Integral) and not isinstance(block, bool):
        if -len(blocks) <= int(block) < len(blocks):
            return blocks[int(block)]
    elif isinstance(block, str) and block in blocks:
        return block
    raise InvalidArgumentError(
        f"block={shown(block)}; pass one of {blocks[0]} ... {blocks[-1]} (bb.attention_blocks()), an index "
        f"from {-len(blocks)} to {len(blocks) - 1}, or None for the last."
    )


def _pixel_values(backbone, image: object) -> torch.Tensor:
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        pixel_values = image
    elif isinstance(image, (list, tuple)):
        raise InvalidArgumentError(
            f"attention() reads one image at a time; got a {type(image).__name__} of {len(image)}. Call it once "
            "per image."
        )
    else:
        pixel_values = backbone.pixel_values([image])
    if pixel_values.shape[0] != 1:
        raise InvalidArgumentError(
            f"attention() reads one image at a time; got a batch of {pixel_values.shape[0]}. Pass "
            "pixel_values[i:i + 1]."
        )
    return pixel_values


def attention(
    backbone, image: ImageInput | torch.Tensor, block: str | int | None = None, rollout: bool = False
) -> Attention:
    """The class token's attention to the patch tokens, per head, at one block of a ViT.

    Works for timm ViTs (ViT, DeiT with its distillation token, ViTs with registers, EVA) and transformers'
    DINOv2 backbones (with and without registers). The weights are the model's real softmax.

    Args:
        backbone: a :class:`~explorer.Backbone` of a ViT with a class token.
        image: one image (path, bytes, PIL, array) or a ``(1, 3, H, W)`` tensor of ``pixel_values``.
        block: a name from ``bb.attention_blocks()`` (the stages that are transformer blocks:
            ``"blocks.11"`` for timm, ``"stage12"`` for transformers), an index into it, or None for the last.
        rollout: also compute attention rollout through the blocks up to ``block`` (reads each of them).

    Returns:
        An :class:`Attention`.

    Raises:
        AttentionError: the model has no attention with a class token (a CNN, Swin): use
            :func:`~explorer.similarity` instead.
        InvalidArgumentError: a block it does not have, several images.

    Example::

        >>> bb = explorer.load_backbone("vit_small_patch16_224", pretrained=False)
        >>> att = attention(bb, cat, block=-1, rollout=True)
        >>> att.maps.shape, att.prefix_tokens, att.rollout.shape
        (torch.Size([6, 14, 14]), ('class',), torch.Size([14, 14]))
    """
    blocks = _backbone(backbone, call="explorer.attention(bb, image)").attention_blocks()
    if not blocks:
        raise AttentionError(
            f"{backbone.spec} ({type(backbone.model).__name__}) has no attention blocks with a class token, so "
            "there is no attention map to read. Use explorer.similarity(bb, images, stage=..., query=(0, row, "
            "col)) to see which locations a location resembles."
        )
    if not isinstance(rollout, bool):
        raise InvalidArgumentError(f"rollout={shown(rollout)}; pass True or False.")
    name = _block(block, blocks)
    wanted = blocks[: blocks.index(name) + 1] if rollout else [name]
    found = backbone.attention_weights(_pixel_values(backbone, image), wanted)
    prefix = len(found.prefix)
    height, width = found.grid
    weights = found.weights[name][0].float()
    heads = weights.shape[0]
    cls_row = weights[:, 0]  # the class token comes first
    rolled = None
    if rollout:
        rolled = attention_rollout([found.weights[b][0] for b in wanted], token=0)[prefix:].reshape(
            height, width
        )
    return Attention(
        maps=cls_row[:, prefix:].reshape(heads, height, width),
        prefix_share=cls_row[:, :prefix].sum(-1),
        prefix_attention=cls_row[:, :prefix],
        prefix_tokens=found.prefix,
        rollout=rolled,
        block=name,
    )
