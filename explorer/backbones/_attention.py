"""Reading a ViT's softmax attention weights where the model computes them: the part of
:class:`~explorer.Backbone` (which inherits it) that :func:`explorer.attention` calls; sources fill in
``attention_blocks`` and ``_attention``.

Example::

    >>> bb.attention_blocks()          # the default is a CNN: no class-token attention
    []
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._args import shown
from ..errors import AttentionError
from ._device import eval_mode
from ._parts import AttentionWeights

__all__ = ["AttentionReader"]


class AttentionReader:
    """:meth:`attention_weights` and the blocks it reads (mixed into :class:`~explorer.Backbone`)."""

    def attention_blocks(self) -> list[str]:
        """The stages whose class-token attention :meth:`attention_weights` can read, in network order; empty
        for a model without such attention (a CNN; Swin's windows hold no class token).

        Example::

            >>> load_backbone("vit_tiny_patch16_224", pretrained=False).attention_blocks()[:2]
            ['blocks.0', 'blocks.1']
        """
        return []

    def attention_weights(self, pixel_values: torch.Tensor, blocks: Sequence[str]) -> AttentionWeights:
        """The real softmax weights of ``blocks`` (names from :meth:`attention_blocks`) for a batch.

        The source reads them where the model computes them (timm with its fused attention switched off,
        transformers with its eager attention), never re-derived from queries and keys; the model is left as
        it was found.

        Raises:
            AttentionError: the model has no such attention, or a name is not one of its blocks.

        Example::

            >>> vit = load_backbone("vit_tiny_patch16_224", pretrained=False, device="cpu")
            >>> vit.attention_weights(torch.randn(1, 3, 224, 224), ["blocks.11"]).weights["blocks.11"].shape
            torch.Size([1, 3, 197, 197])
        """
        known = self.attention_blocks()
        if isinstance(blocks, str) or not isinstance(blocks, (list, tuple)):
            raise AttentionError(
                f"blocks={shown(blocks)}; pass a list of block names, e.g. {known[-1:] or ['blocks.11']}."
            )
        unknown = [name for name in blocks if not isinstance(name, str) or name not in known]
        if not blocks or unknown:
            raise AttentionError(
                f"{self.spec} has no attention weights to read at {shown(unknown) if unknown else 'no block'}. "
                + (
                    f"Blocks with attention: {', '.join(known)}."
                    if known
                    else "It has no attention blocks with a class token; use explorer.similarity instead."
                )
            )
        pixel_values = self._prepare(pixel_values)
        with torch.inference_mode(), eval_mode(self.model):
            try:
                return self._attention(pixel_values, list(dict.fromkeys(blocks)))
            except (AssertionError, RuntimeError, ValueError) as err:
                refused = self._size_error(err, pixel_values)
                if refused is None:
                    raise
                raise refused from err

    def _attention(self, pixel_values: torch.Tensor, blocks: list[str]) -> AttentionWeights:
        """:meth:`attention_weights` for a source whose :meth:`attention_blocks` is not empty."""
        raise NotImplementedError
