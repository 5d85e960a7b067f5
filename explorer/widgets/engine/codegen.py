"""Code generation: the library code that draws what a tab shows. Run as given in a fresh interpreter, it binds
``png`` to the same bytes as the view.

A script is a prelude (imports, the checkpoint, the images) and a body the tab's view writes (its ``code``:
capture and draw, a class-activation map, a scan). Images that exist only in the kernel (uploads, bytes or
arrays given in code) are saved as PNG under safe names in ``folder`` (their pixels, so they load identically),
and the script says so and loads them from there.

Example::

    >>> frame = explorer.Explorer(display=False).controller.frame
    >>> print(script(frame, ["maps = bb.capture(bb.pixel_values(images), layers=['blocks.1'])"], [0]))
    import explorer
    <BLANKLINE>
    bb = explorer.load_backbone('default', pretrained=True, device='cpu')
    images = [explorer.sample_images(['chelsea'])['chelsea']]
    maps = bb.capture(bb.pixel_values(images), layers=['blocks.1'])
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from .frame import Frame
    from .gallery import Gallery

__all__ = ["IMAGE_FOLDER", "backbone_line", "save_image", "script"]

IMAGE_FOLDER = "explorer-images"
"""Where the code saves the images that exist only in the kernel (relative to the working directory)."""


def save_image(image: Image.Image, name: str, folder: str | os.PathLike = IMAGE_FOLDER) -> str:
    """Save ``image``'s pixels as PNG under a safe name made of ``name`` and a hash of the pixels (a file with
    that name is the same image, and is kept); return the path as the code should write it.

    Example::

        >>> from explorer.widgets.engine.codegen import save_image  # not explorer.save_image, the export
        >>> save_image(photos["chelsea"], "../My photo.jpg")
        'explorer-images/My_photo-...png'
    """
    import numpy as np

    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    digest = hashlib.sha256(pixels.tobytes() + repr(pixels.shape).encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(str(name)).stem).strip("_")[:40] or "image"
    path = Path(folder) / f"{stem}-{digest}.png"
    if not path.exists():
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        Image.fromarray(pixels).save(partial, "PNG")
        os.replace(partial, path)  # atomic: a file with this name is complete
    return path.as_posix()


def _image_lines(gallery: Gallery, indices: Sequence[int], folder: str | os.PathLike) -> list[str]:
    notes, loads = [], []
    for i in indices:
        kind, where = gallery.sources[i]
        if kind == "sample":
            loads.append(f"explorer.sample_images([{where!r}])[{where!r}]")
        elif kind == "path":
            loads.append(f"explorer.load_image({where!r})")
        else:
            path = save_image(gallery.images[i], where, folder)
            what = {"upload": "uploaded file", "camera": "camera frame"}.get(kind, "image given in code")
            notes.append(f"# the {what} {where!r}, saved by the panel as {path}")
            loads.append(f"explorer.load_image({path!r})")
    return [*notes, "images = [" + ", ".join(loads) + "]"]


def backbone_line(name: str, spec: str, pretrained: bool, device: str, precision: object) -> list[str]:
    """Lines that load a checkpoint as the panel did (``precision``: a torch dtype, or None for float32)."""
    lines = [f"{name} = explorer.load_backbone({spec!r}, pretrained={pretrained}, device={device!r})"]
    if not pretrained:
        lines.append("# random weights: a fresh run draws other weights, so other maps")
    if precision is not None:
        lines.append(f"{name}.precision = torch.{str(precision).replace('torch.', '')}")
    return lines


def script(
    frame: Frame, body: Sequence[str], indices: Sequence[int], folder: str | os.PathLike = IMAGE_FOLDER
) -> str:
    """The whole script: imports, ``bb`` (the checkpoint on show), ``images`` (the gallery's ``indices``), then
    ``body``, which must bind ``png``."""
    bb, s = frame.backbone, frame.state
    imports = ["import explorer"]
    text = "\n".join(body)
    if bb.precision is not None or "torch." in text:
        imports.insert(0, "import torch")
    if "np." in text:
        imports.insert(0, "import numpy as np")
    lines = [*imports, ""]
    lines += backbone_line("bb", bb.spec, s["pretrained"], str(bb.device), bb.precision)
    lines += _image_lines(frame.gallery, indices, folder)
    lines += list(body)
    return "\n".join(lines) + "\n"
