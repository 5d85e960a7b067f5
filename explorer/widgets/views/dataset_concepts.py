"""The Dataset tab's Concepts mode: concepts learnt at the stage on show over the tab's images, browsed like
channels.

With the state's ``dataset_mode`` at ``"concepts"``, the tab fits :func:`explorer.concepts` at the stage on show
(``stage``) over ``dataset_source`` (a folder, or ``"samples:N"``), ``concepts_n`` concepts with
``concepts_method``, in the engine's worker, with its progress on the status line (both passes and the fit, as
one count). The fit is kept by content, so browsing (``concept``), another image or other colours only redraw:
the concept's exemplars (receptive-field crops with the concept's code overlaid, as the channels'), its code on
the image on show as a heatmap (``cmap``, ``alpha``), and the quality figures (relative reconstruction error,
sparsity, the concept's share, its warning when it lives in one image).

Example::

    >>> app = explorer.Explorer()
    >>> app.tab = "Dataset"; app.dataset_source = "samples:64"
    >>> app.dataset_mode = "concepts"; app.concepts_n = 8; app.concept = 3
    >>> len(app.views["Dataset"].concepts_mode.crop_images)
    9
    >>> exec(app.code()); png == app.png
    True
"""

from __future__ import annotations

import copy
import html
import os
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets

from ...vocabulary import CONCEPT_METHODS
from ..engine import Frame, Scene
from .dataset_source import exemplar_caption, sample_count, source_folder

__all__ = ["ConceptsData", "ConceptsMode", "PROGRESS", "concepts_code", "compute_concepts", "crop_slot"]

PROGRESS = "Concepts"
"""How the status line's progress messages of a fit begin."""

HEATMAP_SIZE = 224
"""Display width and height of the heatmap on the image on show, in CSS pixels."""


@dataclass(frozen=True, eq=False)
class ConceptsData:
    """What the Concepts mode shows: the fitted :class:`~explorer.Concepts`, the concept on show, its crops (PNG)
    and captions, its code on the image on show (``heatmap``, PNG), the quality line and the status message."""

    concepts: object
    concept: int
    crops: tuple[bytes, ...]
    captions: tuple[tuple[str, str], ...]  # (text, full source)
    heatmap: bytes
    quality: str  # HTML
    message: tuple[str, str]  # (kind, HTML)


def _empty(kind: str, message: str) -> ConceptsData:
    return ConceptsData(None, 0, (), (), b"", "", (kind, message))


def _fit(scene: Scene, folder: Path, stage: str, cache: str | None):
    from ...concept_discovery import concepts
    from ...dataset.sources import open_source
    from .dataset import K

    s = scene.state
    source = open_source(folder)

    def progress(done: int, total: int) -> None:
        half = total // 2
        if done < half:
            step = f"sampling locations, {done} of {half} images"
        elif done == half:
            step = f"fitting {s.concepts_n} {s.concepts_method} concepts"
        else:
            step = f"finding each concept's exemplars, {done - half} of {half} images"
        scene.progress(f"{PROGRESS} of {html.escape(stage)}: {step}...", done, total)

    scene.runtime.count_run()
    return concepts(
        copy.copy(scene.backbone),  # the exemplar pass selects its own stage on a copy
        source,
        stage=stage,
        n_concepts=s.concepts_n,
        method=s.concepts_method,
        k=min(K, max(1, len(source))),  # as the channels' exemplars: all of them when fewer than K
        seed=0,
        cache=cache,
        num_workers=0,
        progress=progress,
    )


def _quality(con, concept: int) -> str:
    shares = con.shares
    text = (
        f"{len(con)} {html.escape(con.info['method'])} concepts of <b>{html.escape(con.stage)}</b>, fitted on "
        f"{con.info['sampled']} locations of {con.info['scanned']} images: relative reconstruction error "
        f"{con.relative_error:.3f} (a truncated SVD's: {con.quality['svd_error']:.3f}) · zero codes "
        f"{con.sparsity:.1%} · concept {concept}: {shares[concept]:.1%} of the concepts' energy, "
        f"{con.quality['top_image_share'][concept]:.0%} of it in its strongest image"
    )
    warned = [w for w in con.warnings if w.startswith((f"concept {concept}:", f"concept {concept} "))]
    return text + "".join(f'<div class="explorer-warning">{html.escape(w)}</div>' for w in warned)


def compute_concepts(scene: Scene, cache: str | None) -> ConceptsData:
    """The Concepts mode's data for ``scene`` (in the engine's worker; see the module docs)."""
    import numpy as np

    from ...render import overlay, to_png

    s = scene.state
    if not s.dataset_source:
        return _empty(
            "ok",
            "Point at a folder and press Scan, or use the sample images: the concepts of the stage on show are "
            "learnt over them.",
        )
    stage = s.stage
    if stage not in scene.backbone.stage_names:
        return _empty(
            "warn", f"{html.escape(stage)} is a layer; concepts are learnt at a stage: choose one in Show."
        )
    folder = source_folder(s.dataset_source)
    if (folder / "scan.json").is_file():
        return _empty(
            "warn",
            "This is a saved scan: it holds exemplars, not the maps concepts are learnt from. Point at the images.",
        )
    key = ("concepts", scene.backbone_key, stage, s.dataset_source, s.concepts_n, s.concepts_method, cache)
    con = scene.keyed(key, lambda: _fit(scene, folder, stage, cache))
    concept, notes = s.concept, ""
    if concept >= len(con):
        notes = (
            f" Concept {concept} does not exist ({len(con)} concepts, 0-{len(con) - 1}): the last is shown."
        )
        concept = len(con) - 1
    crops = scene.keyed(
        (*key, concept), lambda: tuple(to_png(np.asarray(crop)) for crop in con.crops(concept))
    )
    codes = scene.cached(("concept-codes", *key), lambda: con.encode(scene.fmap(stage)[None])[0])
    heatmap = scene.cached(
        ("concept-heatmap", *key, concept, s.cmap, s.alpha),
        lambda: to_png(
            overlay(
                scene.image, codes[concept], alpha=s.alpha, cmap=s.cmap, preprocess=scene.backbone.preprocess
            )
        ),
    )
    message = (
        f"{html.escape(stage)} · concept {concept} of {len(con)}: top {len(crops)} of {len(con.scan)} images "
        "(receptive-field crops, concept overlaid); right: where it fires on the image on show." + notes
    )
    return ConceptsData(
        con,
        concept,
        crops,
        tuple(exemplar_caption(e) for e in con.top(concept)),
        heatmap,
        _quality(con, concept),
        ("warn" if notes else "ok", message),
    )


def concepts_code(frame: Frame, data: ConceptsData) -> tuple[list[str], list[int], bytes] | None:
    """The library code of the Concepts mode: the fit, and the first exemplar's crop as ``png``."""

    if data.concepts is None or not data.crops:
        return None
    s = frame.state
    count = sample_count(s["dataset_source"])
    folder = f"explorer.sample_dataset(n={count})" if count else repr(os.path.expanduser(s["dataset_source"]))
    return (
        [
            f"con = explorer.concepts(bb, {folder}, stage={data.concepts.stage!r}, n_concepts={s['concepts_n']!r}, "
            f"method={s['concepts_method']!r}, k={data.concepts.scan.info['k']}, seed=0, cache=None, num_workers=0, progress=False)",
            f"crops = con.crops({data.concept!r})",
            "png = explorer.to_png(np.asarray(crops[0]))",
        ],
        [],
        data.crops[0],
    )


def crop_slot(size: int) -> tuple[widgets.Image, widgets.HTML, widgets.VBox]:
    """An exemplar's widgets: its crop (``size`` CSS pixels square, aspect kept), its caption, and their box."""
    image = widgets.Image(
        format="png", layout=widgets.Layout(width=f"{size}px", height=f"{size}px", object_fit="contain")
    )
    caption = widgets.HTML(layout=widgets.Layout(width=f"{size}px"))
    return image, caption, widgets.VBox([image, caption], layout=widgets.Layout(margin="0 6px 6px 0"))


class ConceptsMode:
    """The Concepts mode's widgets (its choices, quality line, heatmap and exemplars), linked to the state."""

    def __init__(self, controls, crop_size: int) -> None:
        self.crop_size = crop_size
        self.n_box = widgets.BoundedIntText(
            description="Concepts", min=1, max=4096, layout=widgets.Layout(width="160px")
        )
        self.method_box = widgets.Dropdown(
            description="Method", options=CONCEPT_METHODS, layout=widgets.Layout(width="200px")
        )
        self.concept_box = widgets.BoundedIntText(
            description="Concept", min=0, max=4095, layout=widgets.Layout(width="160px")
        )
        for box in (self.n_box, self.concept_box):
            box.continuous_update = False
        self.quality = widgets.HTML()
        self.heatmap = widgets.Image(
            format="png",
            layout=widgets.Layout(
                width=f"{HEATMAP_SIZE}px", height=f"{HEATMAP_SIZE}px", object_fit="contain"
            ),
        )
        self.crop_images: list[widgets.Image] = []
        self.crop_captions: list[widgets.HTML] = []
        self._slots: list[widgets.VBox] = []
        self.crops_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", flex="1"))
        self.crops_box.add_class("explorer-crops")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.n_box, self.method_box, self.concept_box]),
                self.quality,
                widgets.HBox([self.crops_box, self.heatmap]),
            ],
            layout=widgets.Layout(display="none"),
        )
        controls.link("concepts_n", self.n_box)
        controls.link("concepts_method", self.method_box)
        controls.link("concept", self.concept_box)
        self._shown: ConceptsData | None = None

    def show(self, on: bool) -> None:
        """Show (or hide) the mode's widgets."""
        self.widget.layout.display = "" if on else "none"

    def update(self, data: ConceptsData) -> None:
        """Write ``data`` into the widgets (the kernel's thread); only what changed."""
        if data is self._shown:
            return
        self._shown = data
        self.quality.value = data.quality
        self.heatmap.value = data.heatmap
        self.heatmap.layout.display = "" if data.heatmap else "none"
        while len(self._slots) < len(data.crops):
            image, caption, slot = crop_slot(self.crop_size)
            self.crop_images.append(image)
            self.crop_captions.append(caption)
            self._slots.append(slot)
        for image, caption, crop, (text, source) in zip(
            self.crop_images, self.crop_captions, data.crops, data.captions
        ):
            image.value = crop
            caption.value = (
                f'<div class="explorer-caption" title="{html.escape(source)}">{html.escape(text)}</div>'
            )
        self.crops_box.children = tuple(self._slots[: len(data.crops)])
