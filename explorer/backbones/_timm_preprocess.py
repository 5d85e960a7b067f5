"""timm's eval transform as explorer's :class:`~explorer.Preprocess`: the checkpoint's data config checked (what
timm would silently replace is refused), the transform built by timm itself, and split into its geometric part
(the image shown) and its per-pixel part (normalisation).

Example::

    >>> pre = TimmPreprocess({"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "border"})
    >>> pre.pixel_values([image]).shape, pre.view(image).size
    (torch.Size([1, 3, 224, 224]), (224, 224))
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from PIL import Image

from .._args import real, shown, whole
from ..errors import CheckpointError, InvalidArgumentError
from ..images import MAX_INPUT_SIDE
from ..preprocessing import Preprocess

__all__ = ["CROP_MODES", "TimmPreprocess", "geometric_part"]


TENSOR_STEPS = ("ToTensor", "MaybeToTensor", "PILToTensor", "MaybePILToTensor")


CROP_MODES = ("center", "squash", "border")  # timm.data.transforms_imagenet_eval's modes


class TimmPreprocess(Preprocess):
    """timm's own eval transform, ``timm.data.create_transform(**data_config)``; every crop mode timm has.

    :meth:`view` runs the transform's steps before its tensor conversion (resize, crop, pad: the geometric
    part), so the image shown is the one the model got, pixel for pixel, before normalisation.

    Args:
        data_config: timm's data config, as :func:`timm.data.resolve_data_config` returns it (``input_size``,
            ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).

    Raises:
        CheckpointError: a setting timm's transform cannot honour (an unknown ``interpolation``, an input side
            outside 1..``MAX_INPUT_SIDE``, a zero or non-finite ``std``); the message names it.

    Example::

        >>> pre = TimmPreprocess({"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "border"})
        >>> pre.pixel_values([image]).shape, pre.view(image).size
        (torch.Size([1, 3, 224, 224]), (224, 224))
    """

    def __init__(self, data_config: dict) -> None:
        config = dict(data_config)
        hint = f" Input sides run from 1 to MAX_INPUT_SIDE = {MAX_INPUT_SIDE} pixels."
        try:
            channels, *size = config.get("input_size", (3, 224, 224))
            self.input_size = tuple(
                whole("input_size", side, minimum=1, maximum=MAX_INPUT_SIDE, hint=hint) for side in size
            )
            for key in ("mean", "std"):
                values = config.get(key)
                if values is not None and not isinstance(values, (int, float)):
                    if isinstance(values, (str, bytes)) or len(values) != 3:
                        raise InvalidArgumentError(
                            f"{key}={shown(values)}; pass three numbers (red, green, blue)."
                        )
                    values = [real(key, v, hint="pass finite numbers.") for v in values]
                    if key == "std" and not all(values):
                        raise InvalidArgumentError(
                            "std holds a zero: a zero standard deviation divides by zero."
                        )
            if len(self.input_size) != 2:
                raise InvalidArgumentError(
                    f"input_size={shown(config.get('input_size'))}; pass (3, height, width)."
                )
            # timm reads an unknown crop_mode as "center" and a zero crop_pct as its default: refuse, not replace
            if config.get("crop_mode") not in (None, *CROP_MODES):
                raise InvalidArgumentError(
                    f"crop_mode={shown(config.get('crop_mode'))} is no crop mode timm knows; use one of "
                    f"{', '.join(CROP_MODES)}."
                )
            if config.get("crop_pct") is not None:
                real("crop_pct", config["crop_pct"], hint="pass a fraction above 0, e.g. 0.875.")
                if config["crop_pct"] <= 0:
                    raise InvalidArgumentError(
                        f"crop_pct={shown(config['crop_pct'])}; pass a fraction above 0, e.g. 0.875."
                    )
            self.transform = timm.data.create_transform(**config, is_training=False)
        except KeyError as err:  # timm's own lookup of the interpolation name
            raise CheckpointError(
                f"interpolation={shown(config.get('interpolation'))} in the pretrained_cfg is no interpolation "
                "timm knows; use one of bilinear, bicubic, nearest, lanczos, box, hamming."
            ) from err
        except (TypeError, ValueError) as err:  # InvalidArgumentError is a ValueError
            raise CheckpointError(
                f"The pretrained_cfg gives no usable preprocessing ({type(err).__name__}: {err}). Fix pretrained_cfg in the "
                "checkpoint's config.json (input_size, mean, std, crop_pct, crop_mode, interpolation)."
            ) from err
        self._geometry = geometric_part(self.transform)
        steps = list(self.transform.transforms)
        self._per_pixel = type(self.transform)(steps[len(self._geometry.transforms) + 1 :])
        self.settings = {"source": "timm", **{k: plain_value(v) for k, v in sorted(config.items())}}

    def _pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])

    def _view(self, image: Image.Image) -> Image.Image:
        return self._geometry(image)

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._per_pixel(pixels)  # the transform's own steps after its tensor conversion (Normalize)


def geometric_part(transform):
    """The steps of a timm eval transform (a ``Compose``) before its tensor conversion: resize, crop, pad."""
    steps = list(transform.transforms)
    split = next(i for i, step in enumerate(steps) if type(step).__name__ in TENSOR_STEPS)
    return type(transform)(steps[:split])


def plain_value(value: object) -> object:
    """A data-config value as JSON has it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value
