"""The panel's images, each identified by a serial number given when it joins a gallery (never by ``id()``:
Python reuses the address of a freed image, and a cache keyed by it would serve another image's maps).

A gallery is immutable; adding images makes a new one, and the images already in it keep their keys, so the
captures of an image survive uploads. ``sources`` say where each image came from, for code generation:
``("sample", name)``, ``("path", path)``, ``("upload", name)`` (a file sent from the browser) or
``("memory", name)`` (bytes, a PIL image or an array given in code).

Example::

    >>> gallery = gallery_from(None)                  # the sample images
    >>> gallery.names[0], gallery.sources[0]
    ('chelsea', ('sample', 'chelsea'))
    >>> gallery.add(gallery.images[:1], ["again"], [("memory", "again")]).keys[-1] != gallery.keys[0]
    True
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["LIVE", "Gallery", "add_uploads", "gallery_from", "new_key"]

LIVE = "camera frame"
"""The upload name of a live frame (a camera's): one gallery image, ``("camera", LIVE)``, replaced by each frame."""

_serials = itertools.count(1)


def new_key() -> int:
    """A serial never given before in this process (thread-safe: ``next`` on a count holds the GIL)."""
    return next(_serials)


@dataclass(frozen=True, eq=False)
class Gallery:
    """The images the panel can show, their names, sources and keys (one serial per image)."""

    images: tuple[Image.Image, ...] = ()
    names: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()
    keys: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def labels(self) -> list[tuple[str, int]]:
        """``(label, index)`` pairs for a dropdown; animated images say only their first frame is used."""
        return [
            (
                f"{name} ({image.info.get('format', 'animated')}: first frame)"
                if image.info.get("frames", 1) > 1
                else name,
                i,
            )
            for i, (name, image) in enumerate(zip(self.names, self.images))
        ]

    def add(
        self, images: Sequence[Image.Image], names: Sequence[str], sources: Sequence[tuple[str, str]]
    ) -> Gallery:
        """A gallery with ``images`` appended (each with a new key)."""
        return Gallery(
            self.images + tuple(images),
            self.names + tuple(names),
            self.sources + tuple(sources),
            self.keys + tuple(new_key() for _ in images),
        )

    def with_frame(self, image: Image.Image, name: str, source: tuple[str, str]) -> tuple[Gallery, int]:
        """A gallery where ``image`` (a live frame, with a new key) replaces the image from ``source``, or joins
        the gallery when none is from there; and its index."""
        if source in self.sources:
            i = self.sources.index(source)
            return (
                Gallery(
                    self.images[:i] + (image,) + self.images[i + 1 :],
                    self.names[:i] + (name,) + self.names[i + 1 :],
                    self.sources,
                    self.keys[:i] + (new_key(),) + self.keys[i + 1 :],
                ),
                i,
            )
        return self.add([image], [name], [source]), len(self)


def add_uploads(
    gallery: Gallery, uploads: Sequence[tuple[str, bytes]]
) -> tuple[Gallery, int | None, list[str]]:
    """``gallery`` with the files ``(name, bytes)`` that decode added (a :data:`LIVE` frame replaces the last
    one); the index of the first one added (None when
    none was), and the reasons of those refused (:class:`~explorer.ImageError` messages)."""
    from ...errors import ImageError
    from ...images import load_image

    first, refused = None, []
    for name, data in uploads:
        try:
            image = load_image(data, name=name)
        except ImageError as err:
            refused.append(str(err).strip())
            continue
        if name == LIVE:  # a live frame replaces the previous one
            gallery, index = gallery.with_frame(image, name, ("camera", name))
            first = index if first is None else first
            continue
        first = len(gallery) if first is None else first
        gallery = gallery.add([image], [name], [("upload", name)])
    return gallery, first, refused


def gallery_from(images: Sequence[object] | None) -> Gallery:
    """A gallery of ``images`` (paths, bytes, PIL images, arrays), or of the sample images when None.

    Raises:
        ImageError: an image cannot be read, or ``images`` is empty.
    """
    from ...errors import ImageError
    from ...images import load_image, sample_images

    if images is None:
        samples = sample_images()
        return Gallery().add(tuple(samples.values()), tuple(samples), tuple(("sample", n) for n in samples))
    loaded = tuple(load_image(image) for image in images)
    if not loaded:
        raise ImageError("The panel needs at least one image; pass images=[...] or leave it out for samples.")
    paths = [os.fspath(image) if isinstance(image, (str, os.PathLike)) else None for image in images]
    names = tuple(path or f"image {i}" for i, path in enumerate(paths))
    sources = tuple(("path", path) if path else ("memory", name) for path, name in zip(paths, names))
    return Gallery().add(loaded, names, sources)
