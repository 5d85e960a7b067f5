"""One channel upsampled onto the image as the model saw it, to show where the channel fires.

Example::

    >>> overlay(cat, maps["blocks.2"][0, 5], alpha=0.5, preprocess=bb.preprocess).shape
    (224, 224, 3)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._args import finite_pair, real, shown
from ..arrays import as_hw
from ..errors import InvalidArgumentError
from ..images import ImageInput, load_image
from ..preprocessing import Preprocess, model_view
from .colormaps import NONFINITE_ENTRY, OVERLAY_CMAP, packed_palette, unpack
from .ranges import all_finite, check_clip, row_ranges, to_index

__all__ = ["overlay"]


def overlay(
    image: ImageInput,
    channel_map: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    cmap: str = OVERLAY_CMAP,
    *,
    preprocess: Preprocess | None = None,
    clip: float | None = None,
    vrange: tuple[float, float] | None = None,
) -> np.ndarray:
    """One channel, upsampled (bilinear) onto the image as the model saw it, to show where the channel fires.

    The map spans the whole image it is drawn on. Pass the original image with ``preprocess`` (the backbone's
    ``bb.preprocess``) and it is first resized and cropped as the model's input was
    (:func:`~explorer.images.model_view`), so the map lines up; or pass that view itself.

    Args:
        image: a PIL image, path, bytes or array (not the normalised ``pixel_values``).
        channel_map: ``(H, W)`` (or ``(1, 1, H, W)``): one channel of one image, for example
            ``maps["layer1"][0, 5]``. The work runs on its device.
        alpha: the colour's weight, 0 (image only) to 1 (map only).
        cmap: a matplotlib colour map name; :data:`~explorer.render.OVERLAY_CMAP` (``"inferno"``, heat over a
            photo) by default.
        preprocess: resize and crop ``image`` as the model did first.
        clip: a percentile (for example ``99.5``) for the map's range, or None for its min and max.
        vrange: a fixed ``(low, high)`` instead, to compare overlays.

    Returns:
        ``np.uint8`` ``(height, width, 3)`` at the image's (model view's) size; NaN and inf are magenta.

    Example::

        >>> over = overlay(cat, maps["blocks.2"][0, 5], alpha=0.5, preprocess=bb.preprocess)
        >>> over.shape
        (224, 224, 3)
    """
    alpha_hint = "pass a weight between 0 (image only) and 1 (map only)."
    alpha = real("alpha", alpha, hint=alpha_hint)
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha={alpha}; {alpha_hint}")
    clip = check_clip(clip)
    values = as_hw(channel_map, "overlay()")
    picture = load_image(image)
    if preprocess is not None:
        if not isinstance(preprocess, Preprocess):
            raise InvalidArgumentError(
                f"preprocess={shown(preprocess)} ({type(preprocess).__name__}); pass bb.preprocess or None."
            )
        picture = model_view(picture, preprocess)
    device = values.device
    palette = unpack(packed_palette(cmap, device)).float()
    pixels = torch.from_numpy(np.array(picture)).to(device)
    values = values.float()
    if vrange is not None:
        low, high = (torch.tensor([bound], device=device) for bound in finite_pair("vrange", vrange))
    else:
        low, high = row_ranges(values.reshape(1, -1), clip)
    upsampled = F.interpolate(
        values[None, None], size=pixels.shape[:2], mode="bilinear", align_corners=False
    )[0]
    colours = palette[to_index(upsampled, low, high, all_finite(upsampled))[0]]
    blended = torch.where(
        (colours == palette[NONFINITE_ENTRY]).all(-1, keepdim=True),
        colours,
        pixels.float() * (1.0 - float(alpha)) + colours * float(alpha),
    )
    return blended.round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
