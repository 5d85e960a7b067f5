""":class:`Concepts`, what :func:`explorer.concepts` returns: the learnt directions, their codes on any maps of
the stage, each concept's exemplars and crops (the pass-2 scan's), the quality warnings, saving and loading.

Example::

    >>> con = explorer.concepts(bb, explorer.sample_dataset(16), stage="blocks.2", n_concepts=4,
    ...                         method="semi-nmf", k=3, cache=None, progress=False)
    >>> con.encode(maps).shape, len(con.top(0))
    (torch.Size([1, 4, 28, 28]), 3)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._args import backbone as _backbone
from ._args import shown, whole
from .backbones import Backbone
from .dataset.results import Exemplar, Scan
from .dataset.saved import read_small
from .dataset.store import DAMAGED, weights_digest
from .dictionary import Dictionary
from .errors import CacheError, InvalidArgumentError, LayerNotFoundError
from .files import as_path, write_atomic
from .vocabulary import OVERLAY_CMAP

__all__ = ["ONE_IMAGE_SHARE", "ConceptCodes", "Concepts", "concept_warnings", "encode_map"]

ONE_IMAGE_SHARE = 0.5
"""A concept holding at least this share of its sampled code mass in one image is warned about."""


def encode_map(dictionary: Dictionary, fmap: torch.Tensor) -> torch.Tensor:
    """The codes ``(B, n_concepts, h, w)`` of a ``(B, C, h, w)`` map in the dictionary's directions."""
    batch, channels, height, width = fmap.shape
    codes = dictionary.codes(fmap.float().permute(0, 2, 3, 1).reshape(-1, channels))
    return codes.view(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()


class ConceptCodes:
    """The scan projection of pass 2: the stage's map becomes its concept codes."""

    def __init__(self, dictionary: Dictionary, stage: str) -> None:
        self.dictionary, self.stage = dictionary, stage
        self.digest = f"concepts:{stage}:{dictionary.digest}"

    def __call__(self, maps: dict[str, torch.Tensor], image_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.stage: encode_map(self.dictionary, maps[self.stage])}


def concept_warnings(quality: dict) -> list[str]:
    """What the quality figures warn of: concepts that never fire, or fire mostly on one image."""
    found = []
    for concept, (dead, share, image) in enumerate(
        zip(quality["dead"], quality["top_image_share"], quality["top_image"])
    ):
        if dead:
            found.append(f"concept {concept} never fires on the sample; fit fewer concepts or another seed.")
        elif share >= ONE_IMAGE_SHARE:
            found.append(
                f"concept {concept}: {share:.0%} of its sampled activation is in one image ({image}); "
                "it may describe that image rather than the dataset."
            )
    return found


class Concepts:
    """The result of :func:`concepts`; see the module docs.

    Attributes:
        info: what ran: ``spec``, ``weights``, ``weights_sha256``, ``stage``, ``method``, ``n_concepts``,
            ``seed``, ``samples`` (asked), ``sampled`` (held), ``reservoir_bytes``, ``pass1_seconds``,
            ``fit_seconds`` (those of the run that fitted, when ``fit_cached``), ``pass2_seconds``.
        quality: ``relative_error``, ``svd_error``, ``sparsity``, ``active``, ``share``, ``dead``, ``top_image``,
            ``top_image_share`` (see the module docs).
        scan: the pass-2 :class:`~explorer.Scan`: channel ``i`` of :attr:`stage` is concept ``i``.
    """

    def __init__(self, info: dict, dictionary: Dictionary, quality: dict, scan: Scan) -> None:
        self.info, self.quality, self.scan = dict(info), dict(quality), scan
        self._dictionary = dictionary
        self.warnings = concept_warnings(self.quality)

    @property
    def stage(self) -> str:
        return str(self.info["stage"])

    @property
    def basis(self) -> torch.Tensor:
        """``(n_concepts, C)``: the concept directions in the stage's feature space."""
        return self._dictionary.basis

    def __len__(self) -> int:
        return int(self.basis.shape[0])

    @property
    def relative_error(self) -> float:
        """``||A - codes @ basis|| / ||A||`` over the sampled locations."""
        return float(self.quality["relative_error"])

    @property
    def sparsity(self) -> float:
        """The share of zero codes over the sampled locations."""
        return float(self.quality["sparsity"])

    @property
    def shares(self) -> np.ndarray:
        """``(n_concepts,)``: each concept's share of the concepts' energy on the sample (they sum to 1)."""
        return np.asarray(self.quality["share"])

    def encode(self, maps: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The concept codes, ``(N, n_concepts, h, w)``, of ``(N, C, h, w)`` maps of :attr:`stage` (or of a
        :class:`~explorer.FeatureMaps` holding it), on their device.

        Example::

            >>> con = explorer.concepts(bb, explorer.sample_dataset(16), stage="blocks.4", n_concepts=8,
            ...                         method="semi-nmf", k=4, cache=None, progress=False)
            >>> con.encode(maps).shape, con.encode(maps["blocks.4"]).shape
            (torch.Size([1, 8, 14, 14]), torch.Size([1, 8, 14, 14]))
        """
        if isinstance(maps, Mapping):
            if self.stage not in maps:
                raise LayerNotFoundError(
                    f"These maps hold no {self.stage} ({', '.join(maps)}); capture it: bb.capture(x, [{self.stage!r}])."
                )
            maps = maps[self.stage]
        channels = int(self.basis.shape[1])
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[1] != channels:
            shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise InvalidArgumentError(
                f"encode() takes (N, {channels}, h, w) maps of {self.stage}, got {shape}; "
                "add the batch axis with maps[None]."
            )
        return encode_map(self._dictionary, maps)

    def _concept(self, concept: int) -> int:
        return whole("concept", concept, maximum=len(self) - 1)

    def top(self, concept: int) -> list[Exemplar]:
        """The concept's exemplars, best first, exactly as :meth:`explorer.Scan.top` (value: the concept's
        spatial maximum code on the image)."""
        return self.scan.top(self.stage, self._concept(concept))

    def crops(self, concept: int, alpha: float = 0.5, cmap: str = OVERLAY_CMAP) -> list[Image.Image]:
        """The receptive-field crops of the concept's exemplars with the concept's code overlaid (where it
        fires), best first; :data:`~explorer.render.OVERLAY_CMAP` by default (heat over a photo)."""
        return self.scan.crops(self.stage, self._concept(concept), alpha=alpha, cmap=cmap)

    # -- saving and loading ----------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the pass-2 scan, ``concepts.json`` and ``concepts.safetensors`` into ``folder``."""
        from safetensors.torch import save

        folder = self.scan.save(folder)
        write_atomic(folder / "concepts.safetensors", save(self._dictionary.tensors()))
        record = {"info": self.info, "method": self._dictionary.method, "quality": self.quality}
        write_atomic(folder / "concepts.json", json.dumps(record, indent=1).encode())
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike, *, backbone: Backbone | None = None, source=None) -> Concepts:
        """Read concepts written by :meth:`save` or :meth:`save_html`.

        Args:
            path: the folder.
            backbone: the backbone they were fitted on (needed for crops on random weights); checked.
            source: the dataset, for crops of a dataset's concepts.

        Raises:
            CacheError: nothing is saved there, or the files are damaged.
            InvalidArgumentError: ``backbone`` has other weights than those the concepts were fitted on.
        """
        from safetensors.torch import load

        folder = as_path(path, CacheError).expanduser()
        if backbone is not None:
            _backbone(backbone, call="explorer.Concepts.load(folder, backbone=bb)")
        try:
            record = json.loads(read_small(folder / "concepts.json"))
            dictionary = Dictionary.from_tensors(
                record["method"], load((folder / "concepts.safetensors").read_bytes())
            )
            info = record["info"]
            if not (isinstance(info, dict) and isinstance(record["quality"], dict)):
                raise ValueError("concepts.json holds no info or quality mapping")
            for key in ("spec", "stage", "weights_sha256", "method"):
                if not isinstance(info[key], str):
                    raise ValueError(f"info[{key!r}] is not a string")
        except FileNotFoundError as err:
            raise CacheError(
                f"No saved concepts at {shown(str(path))}. Pass a folder written by concepts.save_html()."
            ) from err
        except DAMAGED as err:
            raise CacheError(
                f"The concepts at {folder} are damaged ({shown(str(err))}). Fit them again."
            ) from err
        if backbone is not None and weights_digest(backbone.model) != info["weights_sha256"]:
            raise InvalidArgumentError(
                f"These concepts were fitted on other weights of {info['spec']!r}; pass the backbone they were "
                "fitted on, or fit them again with explorer.concepts(bb, ...)."
            )
        found = Scan.load(
            folder, backbone=backbone, source=source, project=ConceptCodes(dictionary, info["stage"])
        )
        return cls(info, dictionary, record["quality"], found)

    def save_html(self, folder: str | os.PathLike) -> Path:
        """A static report (``index.html``: quality figures, warnings, every concept's exemplar crops), saved
        with the concepts, so :meth:`load` reads the folder back. Returns the path of ``index.html``."""
        from .concept_report import write_concepts_report

        folder = self.save(as_path(folder).expanduser())
        return write_concepts_report(self, folder)

    def __repr__(self) -> str:
        return (
            f"Concepts({self.info['spec']!r}, {self.stage}, {len(self)} {self.info['method']} concepts, "
            f"{len(self.scan)} images, relative error {self.relative_error:.3f}, "
            f"sparsity {self.sparsity:.1%}, {len(self.warnings)} warnings)"
        )
