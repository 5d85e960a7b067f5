"""Stage selection with the exact rules (and ``ValueError`` messages) of transformers' ``BackboneConfigMixin``.

``out_features`` is a list of stage names, ``out_indices`` a list (or tuple) of indices into ``stage_names``,
negative ones allowed. Both must be in network order without duplicates; when both are given they must name the
same stages; when neither is given the last stage is selected. timm's silent reordering is not copied.

Example::

    >>> select_stages(["stem", "stage1", "stage2"], out_indices=(-1,))
    (['stage2'], [-1])
    >>> select_stages(["stem", "stage1", "stage2"], out_features=["stage1"])
    (['stage1'], [1])
"""

from __future__ import annotations

from collections.abc import Sequence

from ._args import shown
from .errors import StageSelectionError

__all__ = ["OutIndicesT", "OutFeaturesT", "select_stages", "verify_stages"]

OutIndicesT = list[int] | tuple[int, ...]
"""Indices into ``stage_names``: a list or tuple of ints, negative ones counting from the end."""

OutFeaturesT = list[str]
"""Stage names, as a list, in network order."""


def verify_stages(
    stage_names: Sequence[str] | None,
    out_features: list[str] | None,
    out_indices: list[int] | None,
) -> None:
    """Raise :class:`~explorer.StageSelectionError` (a ``ValueError``) unless the selection is valid; the checks
    and messages are transformers' own, with long lists shortened and non-integer indices refused."""
    if stage_names is None:
        raise StageSelectionError("Stage_names must be set for transformers backbones")
    stage_names = list(stage_names)

    if out_features is not None:
        if not isinstance(out_features, (list,)):
            raise StageSelectionError(f"out_features must be a list got {type(out_features)}")
        if any(feat not in stage_names for feat in out_features):
            raise StageSelectionError(
                f"out_features must be a subset of stage_names: {shown(stage_names)} got {shown(out_features)}"
            )
        if len(out_features) != len(set(out_features)):
            raise StageSelectionError(
                f"out_features must not contain any duplicates, got {shown(out_features)}"
            )
        if out_features != (sorted_feats := [feat for feat in stage_names if feat in out_features]):
            raise StageSelectionError(
                f"out_features must be in the same order as stage_names, expected {shown(sorted_feats)} got {shown(out_features)}"
            )

    if out_indices is not None:
        if not isinstance(out_indices, list):
            raise StageSelectionError(f"out_indices must be a list, got {type(out_indices)}")
        # transformers' strict config validation refuses these (bools and NumPy integers included): so do we
        wrong = [idx for idx in out_indices if isinstance(idx, bool) or not isinstance(idx, int)]
        if wrong:
            wrong = sorted({type(idx).__name__ for idx in wrong})
            raise StageSelectionError(
                f"out_indices must be a list of integers, got {shown(out_indices)} (with {', '.join(wrong)}); "
                f"pass positions in stage_names {shown(stage_names)}, for example [1, 2] or [-1]"
            )
        positive_indices = tuple(idx % len(stage_names) if idx < 0 else idx for idx in out_indices)
        if any(idx for idx in positive_indices if idx not in range(len(stage_names))):
            raise StageSelectionError(
                f"out_indices must be valid indices for stage_names {shown(stage_names)}, got {shown(out_indices)}"
            )
        if len(positive_indices) != len(set(positive_indices)):
            msg = f"out_indices must not contain any duplicates, got {shown(out_indices)}"
            msg += f"(equivalent to {shown(positive_indices)}))" if positive_indices != out_indices else ""
            raise StageSelectionError(msg)
        if positive_indices != tuple(sorted(positive_indices)):
            sorted_negative = [
                idx for _, idx in sorted(zip(positive_indices, out_indices), key=lambda x: x[0])
            ]
            raise StageSelectionError(
                f"out_indices must be in the same order as stage_names, expected {shown(sorted_negative)} got {shown(out_indices)}"
            )

    both = out_features is not None and out_indices is not None
    if both and len(out_features) != len(out_indices):
        raise StageSelectionError("out_features and out_indices should have the same length if both are set")
    # transformers' check wraps these (-6 % 5 == 4), then its alignment crashes on them (IndexError)
    if out_indices is not None and any(idx < -len(stage_names) for idx in out_indices):
        raise StageSelectionError(
            f"out_indices must be valid indices for stage_names {shown(stage_names)}, got {shown(out_indices)}"
        )
    if both and out_features != [stage_names[idx] for idx in out_indices]:
        raise StageSelectionError(
            "out_features and out_indices should correspond to the same stages if both are set"
        )


def select_stages(
    stage_names: Sequence[str],
    out_features: OutFeaturesT | None = None,
    out_indices: OutIndicesT | None = None,
) -> tuple[list[str], list[int]]:
    """Validate and align a stage selection, as ``BackboneConfigMixin.set_output_features_output_indices``.

    Args:
        stage_names: every stage, in network order.
        out_features: stage names to select, a list.
        out_indices: indices to select, a list or tuple; negative indices count from the end and are kept as given.

    Returns:
        ``(out_features, out_indices)``, aligned; the last stage when neither was given.

    Raises:
        StageSelectionError: (a ``ValueError``) with transformers' message, for a non-list, unknown name,
            non-integer or out-of-range index, duplicate, order other than the network's, or ``out_features``
            and ``out_indices`` that disagree.
    """
    if (
        not isinstance(stage_names, (list, tuple))
        or not stage_names
        or not all(isinstance(n, str) for n in stage_names)
    ):
        raise StageSelectionError(
            f"stage_names={shown(stage_names)}; pass the backbone's list of stage names."
        )
    stage_names = list(stage_names)
    out_indices = list(out_indices) if isinstance(out_indices, tuple) else out_indices
    verify_stages(stage_names, out_features, out_indices)
    if out_indices is None and out_features is None:
        out_indices = [len(stage_names) - 1]
        out_features = [stage_names[-1]]
    elif out_indices is None:
        out_indices = [stage_names.index(layer) for layer in out_features]
    elif out_features is None:
        out_features = [stage_names[idx] for idx in out_indices]
    verify_stages(stage_names, out_features, out_indices)
    return list(out_features), list(out_indices)
