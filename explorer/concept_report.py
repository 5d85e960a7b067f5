"""The static HTML report of :class:`~explorer.Concepts`: quality figures, warnings and every concept's exemplars.

One page, ``index.html``: what was fitted (model, stage, method, sample), the quality figures (relative
reconstruction error, sparsity of the codes), the warnings, then one section per concept, by share of energy:
its share, the share of its mass in its strongest image, and its exemplars as receptive-field crops with the
concept's code overlaid (PNG files in ``concepts/``). The concepts are saved beside it, so
``explorer.Concepts.load(folder)`` reads the folder back.

Example::

    >>> con = explorer.concepts(bb, explorer.sample_dataset(16), stage="blocks.2", n_concepts=4,
    ...                         method="semi-nmf", k=3, cache=None, progress=False)
    >>> index = con.save_html("report/")
    >>> index.name
    'index.html'
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from .dataset.report import html_page
from .export import save_png
from .files import make_folder, write_atomic

__all__ = ["write_concepts_report"]


def write_concepts_report(con, folder: Path) -> Path:
    """Write the report of ``con`` (already saved in ``folder``); returns the path of ``index.html``."""
    crops = folder / "concepts"
    make_folder(crops)
    files: dict[tuple[int, int], str] = {}
    for concept, rank, crop in con.scan.exemplar_crops(con.stage, list(range(len(con)))):
        name = f"k{concept:04d}_{rank:02d}.png"
        save_png(np.asarray(crop), crops / name)
        files[concept, rank] = f"concepts/{name}"
    quality, info = con.quality, con.info
    sections = []
    for concept in np.argsort(-con.shares, kind="stable"):
        concept = int(concept)
        figures = []
        for rank, exemplar in enumerate(con.top(concept)):
            source = exemplar.source
            shown = os.path.basename(source) if isinstance(source, str) else source
            where = f"{exemplar.value:.3g} @ {exemplar.cell[0]},{exemplar.cell[1]}"
            figures.append(
                f'<figure><img src="{html.escape(files[concept, rank])}" alt="exemplar {rank + 1}" '
                f'title="{html.escape(str(source))}"><figcaption>{html.escape(where)}<br>'
                f"{html.escape(str(shown))}</figcaption></figure>"
            )
        image = quality["top_image"][concept]
        numbers = (
            f"share {con.shares[concept]:.1%} · {quality['top_image_share'][concept]:.0%} of its mass in "
            f"{os.path.basename(image) if isinstance(image, str) else image}"
        )
        sections.append(
            f'<div class="channel" id="k{concept}"><h2>concept {concept}</h2>'
            f'<div class="stats">{html.escape(numbers)}</div><div class="row">{"".join(figures)}</div></div>'
        )
    warnings = "".join(f"<li>{html.escape(text)}</li>" for text in con.warnings)
    title = f"Concepts of {info['spec']} at {con.stage}"
    head = (
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(con)} {html.escape(info['method'])} concepts fitted on {info['sampled']} sampled locations of "
        f"{info['scanned']} images (weights: {html.escape(str(info['weights']))}; seed {info['seed']}); "
        f"exemplars: the top {con.scan.info['k']} of {len(con.scan)} images by the concept's spatial maximum, "
        "cropped to the receptive field, with the concept's code overlaid (inferno, from the concept's mean over "
        "the dataset, dark, to its best exemplar's value, bright: the same scale for all of a concept's crops). "
        "Captions: the code's maximum @ its row, column on the stage's map, and the image. A concept's share is "
        "its share of the concepts' energy on the sample; its mass is the sum of its codes there, and a concept "
        "with most of its mass in one image is warned about.</p>"
        f"<p>relative reconstruction error {quality['relative_error']:.3f} (the best {len(con)} directions "
        f"with signed codes, a truncated SVD: {quality['svd_error']:.3f}) · zero codes "
        f"{quality['sparsity']:.1%} · {quality['active']:.2f} concepts active per location on average</p>"
        + (f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else "")
    )
    index = folder / "index.html"
    return write_atomic(index, html_page(title, head + "\n".join(sections)).encode())
