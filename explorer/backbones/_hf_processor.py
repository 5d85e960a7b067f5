"""transformers' image processors as explorer's :class:`~explorer.Preprocess`: the processor's own pixel values,
its geometric steps alone for the image shown, and its normalisation on pixels already resized.

Example::

    >>> import transformers
    >>> pre = HFPreprocess(transformers.ViTImageProcessor(size={"height": 32, "width": 48}))
    >>> pre.input_size, pre.pixel_values([image]).shape
    ((32, 48), torch.Size([1, 3, 32, 48]))
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from PIL import Image

from .._args import real, whole
from ..errors import CheckpointError, InvalidArgumentError
from ..images import MAX_INPUT_SIDE
from ..preprocessing import Preprocess
from ._hf_model import BUILD_ERRORS
from ._timm_preprocess import geometric_part

__all__ = ["HFPreprocess"]


class HFPreprocess(Preprocess):
    """transformers' own image processor: :meth:`pixel_values` is exactly its ``pixel_values``.

    Aspect ratio, padding and variable sizes are the processor's (DETR keeps the aspect ratio, so images of other
    shapes give maps of other shapes). :meth:`view` runs the same processor with rescaling, normalisation and
    channel flipping switched off: the image the model got, before those steps.

    Args:
        processor: an image processor (``AutoImageProcessor.from_pretrained(folder)``).

    Raises:
        CheckpointError: a setting explorer cannot honour: a size outside 1..``MAX_INPUT_SIDE``, a non-finite
            ``image_mean``, a zero or non-finite ``image_std``, a processor that needs more than images (ViTPose's boxes); the message
            names it.

    Example::

        >>> import transformers
        >>> pre = HFPreprocess(transformers.DetrImageProcessor())
        >>> pre.pixel_values([Image.new("RGB", (640, 480))]).shape
        torch.Size([1, 3, 800, 1066])
    """

    def __init__(self, processor) -> None:
        self.processor = processor
        name = type(processor).__name__
        hint = f" Sides run from 1 to {MAX_INPUT_SIDE} pixels."
        try:
            for key in ("size", "crop_size"):
                sides = _sides(getattr(processor, key, None))
                for side in sides:
                    if side is not None:
                        whole(f"{name}.{key}", side, minimum=1, maximum=MAX_INPUT_SIDE, hint=hint)
            if getattr(processor, "do_normalize", False):  # NaN or inf in either would make every pixel NaN
                _finite(name, "image_mean", getattr(processor, "image_mean", None))
                std = _finite(name, "image_std", getattr(processor, "image_std", None))
                if not all(std):
                    raise InvalidArgumentError(
                        f"{name}.image_std={std}: a zero standard deviation divides by zero."
                    )
        except (TypeError, ValueError) as err:  # InvalidArgumentError
            raise CheckpointError(str(err)) from err
        self.settings = {"source": "transformers", "class": name, **json.loads(processor.to_json_string())}
        self.input_size = tuple(int(v) for v in self.pixel_values([Image.new("RGB", (512, 512))]).shape[-2:])
        wide = tuple(int(v) for v in self.pixel_values([Image.new("RGB", (512, 256))]).shape[-2:])
        self.fixed_size = wide == self.input_size

    def _run(self, images: Sequence[Image.Image], **options) -> torch.Tensor:
        name = type(self.processor).__name__
        if "boxes" in _required(
            self.processor
        ):  # a top-down pose processor (ViTPose): the whole image is the box
            options["boxes"] = [[[0.0, 0.0, float(image.width), float(image.height)]] for image in images]
        try:
            values = self.processor(images=list(images), return_tensors="pt", **options)["pixel_values"]
        except BUILD_ERRORS as err:
            raise CheckpointError(
                f"{name} cannot preprocess plain images ({type(err).__name__}: {err}). Explorer runs whole "
                "images through the folder's own processor; save the model with an image processor that takes "
                "images alone (preprocessor_config.json), or load its backbone checkpoint."
            ) from err
        if not isinstance(values, torch.Tensor) or values.ndim != 4 or values.shape[:2] != (len(images), 3):
            raise CheckpointError(
                f"{name} gives pixel_values of shape {tuple(getattr(values, 'shape', ()))}, not one RGB image "
                "per input (B, 3, H, W); explorer cannot show maps of patches or crops."
            )
        return values

    def _pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._run(images).float()

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        processor = self.processor
        timm_transform = getattr(processor, "val_transforms", None)
        if timm_transform is not None:
            steps = list(timm_transform.transforms)
            return type(timm_transform)(steps[len(geometric_part(timm_transform).transforms) + 1 :])(pixels)
        pixels = pixels * 255
        if getattr(processor, "do_rescale", False):
            pixels = pixels * processor.rescale_factor
        if getattr(processor, "do_normalize", False):
            mean = torch.as_tensor(processor.image_mean, dtype=pixels.dtype, device=pixels.device)
            std = torch.as_tensor(processor.image_std, dtype=pixels.dtype, device=pixels.device)
            pixels = (pixels - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1)
        if getattr(processor, "do_flip_channel_order", False):  # MobileViT's BGR
            pixels = pixels.flip(-3)
        return pixels

    def _view(self, image: Image.Image) -> Image.Image:
        timm_transform = getattr(self.processor, "val_transforms", None)  # timm-wrapper folders: timm's own
        if timm_transform is not None:
            return geometric_part(timm_transform)(image)
        off = {"do_normalize": False}
        if getattr(self.processor, "do_flip_channel_order", None) is not None:  # MobileViT's BGR
            off["do_flip_channel_order"] = False
        try:
            values = self._run([image], do_rescale=False, **off)[0]
        except (
            CheckpointError
        ):  # a processor whose later steps need floats (EfficientNet's): undo its rescale
            values = self._run([image], **off)[0]
            if getattr(self.processor, "do_rescale", False):
                offset = 1.0 if getattr(self.processor, "rescale_offset", False) else 0.0
                values = (values + offset) / self.processor.rescale_factor
        pixels = values.float().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        return Image.fromarray(pixels.numpy())


def _finite(name: str, key: str, given: object) -> list[float]:
    """A processor's ``image_mean`` or ``image_std`` (a number or a list; None when unset) as finite floats."""
    values = [given] if isinstance(given, (int, float)) or given is None else given
    return [
        real(f"{name}.{key}", value, hint="pass finite numbers.") for value in values if value is not None
    ]


def _sides(value: object) -> list:
    """The sides in pixels of a processor's ``size`` or ``crop_size`` (a number, a list, a dict, a SizeDict)."""
    if hasattr(value, "__dataclass_fields__"):  # transformers' SizeDict
        value = vars(value)
    if isinstance(value, dict):
        return [value.get(key) for key in ("height", "width", "shortest_edge", "longest_edge")]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _required(processor) -> set[str]:
    """The arguments besides the images that ``processor.preprocess`` cannot do without."""
    import inspect

    parameters = inspect.signature(processor.preprocess).parameters.values()
    return {
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    } - {"self", "images"}
