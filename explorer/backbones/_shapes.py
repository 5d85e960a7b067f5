"""What a backbone's stages and layers look like, found by probing: output shapes at any input size, the stage
table, and the layout of any layer's output. A part of :class:`~explorer.Backbone` (which inherits it), apart so
that the interface module holds only the interface.

Probes run on a meta-device copy of the model (shapes only, no memory), once per size and layer; a model that
cannot run there runs once on zeros.

Example::

    >>> bb.output_shapes((224, 224))["blocks.2"]
    (40, 28, 28)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from .._args import shown, whole
from ..errors import InvalidArgumentError
from ..hooks import LayerLayout, find_layouts, resolve_layers
from ..images import MAX_INPUT_SIDE
from ._device import eval_mode, meta_copy

__all__ = ["StageShapes"]

_log = logging.getLogger(__name__)


class StageShapes:
    """Shapes and layouts of a backbone's stages and layers (mixed into :class:`~explorer.Backbone`).

    Uses the backbone's ``model``, ``all_stages``, ``preprocess``, ``device``, ``dtype``, ``spec`` and its
    ``_forward``; caches per input size.
    """

    def output_shapes(self, input_size: tuple[int, int] | None = None) -> dict[str, tuple[int, int, int]]:
        """``(C, H, W)`` of every stage's map for a ``(height, width)`` input, exactly as the forward gives it.

        The model runs on the meta device (shapes only: no arithmetic, no memory), once per size; a model that
        cannot run there runs once on zeros. The input size defaults to the checkpoint's.

        Raises:
            InvalidArgumentError: the model does not accept inputs of this size (a ViT built for 224x224;
                timm ViTs accept any size when loaded with ``dynamic_img_size=True``).

        Example::

            >>> explorer.load_backbone("inception_v3", pretrained=False).output_shapes((299, 299))["Mixed_5d"]
            (288, 35, 35)
        """
        size = input_size if input_size is not None else self.preprocess.input_size
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise InvalidArgumentError(f"input_size={shown(input_size)}; pass (height, width).")
        size = tuple(whole("input_size", v, minimum=1, maximum=MAX_INPUT_SIDE) for v in size)
        if size not in self._shapes:
            self._shapes[size] = self._probe_shapes(size)
        return dict(self._shapes[size])

    def _probe_shapes(self, size: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
        names = self._servable_stages()
        try:
            with torch.inference_mode():
                maps = self._forward(torch.zeros(1, 3, *size, device="meta"), names, meta_copy(self.model))
        except Exception as err:  # models that read tensor values (or mix devices) cannot run on meta
            _log.debug("meta-device shapes failed for %s (%s); running on zeros", self.spec, err)
            zeros = torch.zeros(1, 3, *size, device=self.device, dtype=self.dtype)
            try:
                with torch.inference_mode(), eval_mode(self.model):
                    maps = self._forward(zeros, names, self.model)
            except Exception as err:  # the model refuses the size: its own assert, a reshape, a mask
                raise self._size_refused(size, err) from err
        shapes = {name: tuple(int(v) for v in fmap.shape[1:]) for name, fmap in maps.items()}
        height, width = size
        # stages the model cannot output (MaskFormer-Swin's stem) get the stride rule
        for stage in self.all_stages:
            shapes.setdefault(
                stage.name, (stage.channels, -(-height // stage.reduction), -(-width // stage.reduction))
            )
        return {stage.name: shapes[stage.name] for stage in self.all_stages}

    def _servable_stages(self) -> list[str]:
        """The stages a forward pass can output (all, unless a source says otherwise)."""
        return self.stage_names

    def _size_refused(self, size: tuple[int, int], err: Exception) -> InvalidArgumentError:
        height, width = size
        return InvalidArgumentError(
            f"{self.spec} does not accept a {height}x{width} input ({type(err).__name__}: {err}); it was built for "
            f"{self.preprocess.input_size[0]}x{self.preprocess.input_size[1]}. Resize to that, or, for a timm "
            f'ViT, load it with dynamic_img_size=True: load_backbone("{self.spec}", dynamic_img_size=True).'
        )

    def stage_table(self, input_size: tuple[int, int] | None = None) -> list[dict]:
        """One row per stage: name, index, channels, reduction, output shape, module, selected.

        Shapes are those the forward pass gives (see :meth:`output_shapes`).

        Example::

            >>> bb.stage_table()[1]
            {'index': 1, 'name': 'blocks.1', 'channels': 24, 'reduction': 4, 'shape': (24, 56, 56), 'module': 'blocks.1', 'selected': True}
        """
        shapes = self.output_shapes(input_size)
        selected = set(self._out_features)
        return [
            {
                "index": stage.index,
                "name": stage.name,
                "channels": stage.channels,
                "reduction": stage.reduction,
                "shape": shapes[stage.name],
                "module": stage.module,
                "selected": stage.name in selected,
            }
            for stage in self.all_stages
        ]

    def describe(self, input_size: tuple[int, int] | None = None) -> str:
        """Every stage as text: ``repr(bb)``'s first line, then index, name, channels, reduction and output
        shape per stage, the selected ones starred (the shapes come from :meth:`output_shapes`, a shape-only
        probe; ``repr`` runs nothing).

        Example::

            >>> print(load_backbone("resnet18", pretrained=False, out_indices=[2], device="cpu").describe())
            Backbone('resnet18', weights='random', device='cpu', input=(224, 224))
                 0 act1                        64 ch  /2   (64, 112, 112)
                 1 layer1                      64 ch  /4   (64, 56, 56)
              *  2 layer2                     128 ch  /8   (128, 28, 28)
                 3 layer3                     256 ch  /16  (256, 14, 14)
                 4 layer4                     512 ch  /32  (512, 7, 7)
        """
        rows = "\n".join(
            f"  {'*' if row['selected'] else ' '} {row['index']:>2} {row['name']:<24} {row['channels']:>5} ch  "
            f"/{row['reduction']:<3} {row['shape']}"
            for row in self.stage_table(input_size)
        )
        return f"{repr(self).splitlines()[0]}\n{rows}"

    @property
    def prefix_tokens(self) -> int | None:
        """Class, register and distillation tokens before a token output's patch tokens, as the model declares
        them (timm's ``num_prefix_tokens``); None where the source does not say (the layout probe finds them)."""
        return None

    def layout(self, name: str, input_size: tuple[int, int] | None = None) -> LayerLayout:
        """How the output of a stage or any layer is laid out, for a ``(height, width)`` input.

        A stage's is known from its source; any other layer's is found by :func:`explorer.hooks.find_layouts`
        (shapes at two input sizes, on a meta-device copy), once per layer and size.

        Example::

            >>> convnext = load_backbone("convnext_atto", pretrained=False, conv_mlp=False, device="cpu")
            >>> convnext.layout("stages.0.blocks.0.norm")          # channels-last inside the block
            LayerLayout(channels=40, channels_last=True, reduction=4, prefix_tokens=None, unaligned=None)
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f"name={shown(name)}; pass a stage name ({', '.join(self.stage_names)}) or a layer name from "
                "explorer.list_layers(bb)."
            )
        if input_size is None:
            input_size = self.preprocess.input_size
        elif (
            isinstance(input_size, (str, bytes))
            or not isinstance(input_size, Sequence)
            or len(input_size) != 2
        ):
            raise InvalidArgumentError(
                f"input_size={shown(input_size)}; pass (height, width), e.g. (224, 224)."
            )
        size = tuple(whole("input_size", side, minimum=1, maximum=MAX_INPUT_SIDE) for side in input_size)
        return self._layouts([name], size)[name]

    def _layouts(self, names: Sequence[str], size: tuple[int, int]) -> dict[str, LayerLayout]:
        stages = self.stage_names
        size = (int(size[0]), int(size[1]))
        cache = self.__dict__.setdefault("_layout_cache", {})
        missing = [n for n in names if n not in stages and (size, n) not in cache]
        if missing:
            resolve_layers(self.model, missing)
            try:
                meta = meta_copy(self.model)
                found = find_layouts(
                    lambda at: meta(torch.zeros(1, 3, *at, device="meta")),
                    meta,
                    missing,
                    size,
                    self.prefix_tokens,
                )
            except Exception as err:  # models that read tensor values cannot run on meta: zeros, for real
                _log.debug("meta-device layouts failed for %s (%s); running on zeros", self.spec, err)

                def run(at: tuple[int, int]) -> None:
                    with torch.inference_mode(), eval_mode(self.model):
                        self.model(torch.zeros(1, 3, *at, device=self.device, dtype=self.dtype))

                found = find_layouts(run, self.model, missing, size, self.prefix_tokens, second=False)
            cache.update(((size, name), layout) for name, layout in found.items())
        return {name: self._stage_layout(name) if name in stages else cache[(size, name)] for name in names}

    def _stage_layout(self, name: str) -> LayerLayout:
        stage = self.stage(name)
        return LayerLayout(stage.channels, stage.channels_last, stage.reduction, self.prefix_tokens)

    def _capture_options(self, pixel_values: torch.Tensor, model: nn.Module, layers: Sequence[str]) -> dict:
        """:func:`~explorer.capture` options for the stages and layers ``layers`` (stage or module names)."""
        batch, _, height, width = pixel_values.shape
        found = self._layouts(layers, (height, width))
        layouts = {self.module_name(n): layout for n, layout in found.items()}
        return {"layouts": layouts, "input_size": (height, width), "batch_size": batch}
