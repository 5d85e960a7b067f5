"""The panel's rules: which selections and values can be shown, and what a change corrects. Pure functions of a
state snapshot and what is loaded; they raise, or return corrected values, and never touch the state.

The stage rules are the library's own: :func:`explorer.stages.select_stages`, messages included, so the panel
refuses what ``load_backbone`` refuses (``[True]``, ``[1.0]``, ``[2, 1]``) instead of coercing it.

Example::

    >>> check_stages(["stem", "stage1", "stage2"], (2, 1))
    Traceback (most recent call last):
    ...
    explorer.errors.StageSelectionError: ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ...errors import InvalidArgumentError
from ...vocabulary import page_count
from ..state import CAPTURE

if TYPE_CHECKING:
    from ...backbones import Backbone
    from ...hooks import FeatureMaps
    from .gallery import Gallery

__all__ = ["check_stages", "differs", "fit_display", "fit_selection", "same_stages", "select", "shown_images"]


def differs(a: object, b: object) -> bool:
    """Whether two snapshot values differ, types included (``(True,)`` is not ``(1,)``, ``1.0`` is not ``1``)."""
    return a != b or repr(a) != repr(b)


def check_stages(stage_names: Sequence[str], out_indices: Sequence[object]) -> list[int]:
    """``out_indices`` as a list once :func:`~explorer.stages.select_stages` accepts it (its error otherwise)."""
    from ...stages import select_stages

    return select_stages(list(stage_names), out_indices=list(out_indices))[1]


def select(backbone: Backbone, out_indices: Sequence[object], precision: str) -> Backbone:
    """A copy of ``backbone`` with ``out_indices`` selected (:func:`check_stages`) and ``precision`` set; the
    shared backbone is never changed. float16 and bfloat16 are refused on the CPU."""
    import copy

    import torch

    indices = check_stages(backbone.stage_names, out_indices)
    selected = copy.copy(backbone)
    selected.out_indices = indices
    dtype = getattr(torch, precision)
    if dtype != torch.float32 and selected.device.type == "cpu":
        raise InvalidArgumentError(
            f"{precision} needs a GPU; this model runs on the CPU. Choose float32, or device cuda."
        )
    selected.precision = None if dtype == torch.float32 else dtype  # autocast: the weights stay as loaded
    return selected


def same_stages(selected: Backbone, other: Backbone) -> list[int]:
    """``other``'s indices of ``selected``'s stages (checkpoint B of the same architecture)."""
    if any(name not in other.stage_names for name in selected.out_features):
        raise InvalidArgumentError(
            f"Checkpoint B ({other.spec}) has other stages ({other.stage_names}); compare checkpoints of the "
            "same architecture."
        )
    return [other.stage_names.index(name) for name in selected.out_features]


def fit_selection(
    stage_names: Sequence[str], layers_known: Sequence[str], snap: Mapping[str, object]
) -> dict[str, object]:
    """For a newly loaded checkpoint: the stages and layers of ``snap`` it has (the first stage when none)."""
    count = len(stage_names)
    indices = tuple(  # what is not an integer stays, for select_stages to refuse
        i for i in snap["out_indices"] if isinstance(i, bool) or not isinstance(i, int) or -count <= i < count
    )
    known = set(layers_known)
    return {"out_indices": indices or (0,), "layers": tuple(n for n in snap["layers"] if n in known)}


def shown_images(gallery: Gallery, snap: Mapping[str, object]) -> list[int]:
    """The gallery indices a capture needs: the image on show, and image B when comparing images."""
    wanted = ("image_index",) + (("compare_image_index",) if snap["compare"] == "images" else ())
    for name in wanted:
        index = snap[name]
        if index >= len(gallery):
            raise InvalidArgumentError(
                f"{name}={index}: the gallery has {len(gallery)} images, 0-{len(gallery) - 1}."
            )
    if snap["compare"] == "images" and len(gallery) < 2:
        raise InvalidArgumentError("Comparing images needs two images in the gallery: upload another one.")
    return [snap[name] for name in wanted]


def fit_display(
    maps: FeatureMaps, snap: Mapping[str, object], applied: Mapping[str, object] | None, level: int
) -> dict[str, object]:
    """Stage, channel and page that exist, as corrections of ``snap``. After a capture or a stage change they
    are corrected (a layer just added is shown, the channel clamped, the page reset); a value typed for the map
    on show that it does not have is refused."""
    names = list(maps)
    applied = applied or {}
    corrected: dict[str, object] = {}
    stage = snap["stage"]
    added = [name for name in snap["layers"] if name not in applied.get("layers", ())] if applied else []
    if stage not in names:
        if level < CAPTURE and applied and applied["stage"] != stage:
            raise InvalidArgumentError(f'No map named "{stage}" on show; choose one of: {", ".join(names)}.')
        stage = corrected["stage"] = added[-1] if added and added[-1] in names else names[0]
    elif level >= CAPTURE and added and added[-1] in names:
        stage = corrected["stage"] = added[-1]  # a layer just added is what the user wants to see
    count = maps[stage].shape[1]
    same_map = bool(applied) and level < CAPTURE and applied["stage"] == stage
    if snap["channel"] >= count:
        if same_map and applied["channel"] != snap["channel"]:
            raise InvalidArgumentError(
                f"Channel {snap['channel']} does not exist: {stage} has {count} channels, 0-{count - 1}."
            )
        corrected["channel"] = count - 1
    pages = page_count(count, snap["page_size"])
    if snap["page"] >= pages:
        if same_map and applied["page"] != snap["page"] and applied["page_size"] == snap["page_size"]:
            raise InvalidArgumentError(
                f"Page {snap['page'] + 1} does not exist: {stage} has {pages} pages of {snap['page_size']}."
            )
        corrected["page"] = 0
    return corrected
