"""Stage selection: our rules against transformers' own BackboneConfigMixin, case by case and by property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import explorer
from explorer.errors import StageSelectionError
from explorer.stages import select_stages

transformers = pytest.importorskip("transformers")
from transformers.backbone_utils import BackboneConfigMixin  # noqa: E402

NAMES = ["stem", "stage1", "stage2", "stage3", "stage4"]


class _Reference(BackboneConfigMixin):
    def __init__(self, stage_names):
        self.stage_names = stage_names


def reference(stage_names, out_features, out_indices):
    """transformers' result, or the (type, message) of its error."""
    config = _Reference(list(stage_names))
    try:
        config.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
    except Exception as err:  # noqa: BLE001 - any type is compared
        return type(err), str(err)
    return list(config.out_features), list(config.out_indices)


def ours(stage_names, out_features, out_indices):
    """Our result, or ``(ValueError, message)`` for a refusal (a StageSelectionError is a ValueError)."""
    try:
        return select_stages(stage_names, out_features=out_features, out_indices=out_indices)
    except StageSelectionError as err:
        return ValueError, str(err)
    except Exception as err:  # noqa: BLE001 - any other type is a bug the comparison shows
        return type(err), str(err)


def agree(stage_names, out_features, out_indices):
    """Ours equals transformers' answer; where transformers crashes (an index past the start: IndexError), ours
    refuses with its out-of-range message instead."""
    expected = reference(stage_names, out_features, out_indices)
    got = ours(stage_names, out_features, out_indices)
    if expected[0] is IndexError:
        return got == (
            ValueError,
            f"out_indices must be valid indices for stage_names {list(stage_names)}, got {list(out_indices)}",
        )
    return got == expected


CASES = [
    (None, None),
    (None, [1]),
    (None, (1, 2)),
    (None, [-1]),
    (None, [-2, -1]),
    (None, [0, -1]),
    (["stage1"], None),
    (["stage1", "stage3"], None),
    (["stage1"], [1]),
    (["stage1", "stage2"], [1, 2]),
    (["stage1", "stage2"], [-4, -3]),
    (["stage1"], [2]),  # disagree
    (["stage1", "stage2"], [1]),  # different lengths
    (["stage2", "stage1"], None),  # order
    (None, [2, 1]),  # order
    (None, [-1, 1]),  # order with negatives
    (None, [1, 1]),  # duplicate
    (None, [4, -1]),  # duplicate through a negative
    (["stage1", "stage1"], None),  # duplicate names
    (["layer1"], None),  # unknown name
    (None, [5]),  # out of range
    (None, [7, 8]),
    (("stage1",), None),  # a tuple of names is refused
    (None, 1),  # not a list
    ("stage1", None),
    (None, []),
    ([], None),
    (None, [-6]),  # transformers wraps it in its check, then crashes (IndexError); refused here
]


@pytest.mark.parametrize(("out_features", "out_indices"), CASES)
def test_same_result_or_message_as_transformers(out_features, out_indices):
    assert agree(NAMES, out_features, out_indices), (
        ours(NAMES, out_features, out_indices),
        reference(NAMES, out_features, out_indices),
    )


def test_documented_behaviour():
    assert select_stages(NAMES) == (["stage4"], [4])
    assert select_stages(NAMES, out_indices=(-1,)) == (["stage4"], [-1])
    assert select_stages(NAMES, out_features=["stage2"]) == (["stage2"], [2])
    with pytest.raises(ValueError, match="should correspond to the same stages"):
        select_stages(NAMES, out_features=["stage1"], out_indices=[2])
    with pytest.raises(ValueError, match="must be in the same order as stage_names, expected \\[1, 2\\]"):
        select_stages(NAMES, out_indices=[2, 1])


names_strategy = st.lists(
    st.sampled_from(["stem", "a", "b", "c", "d", "e", "f"]), min_size=1, max_size=6, unique=True
)


@settings(max_examples=400, deadline=None)
@given(
    stage_names=names_strategy,
    out_features=st.none()
    | st.lists(st.sampled_from(["stem", "a", "b", "c", "d", "e", "f", "zz"]), max_size=4),
    out_indices=st.none() | st.lists(st.integers(-8, 8), max_size=4) | st.tuples(st.integers(-8, 8)),
)
def test_property_matches_transformers(stage_names, out_features, out_indices):
    assert agree(stage_names, out_features, out_indices)


@pytest.mark.parametrize("selection", [{"out_indices": []}, {"out_features": []}, {"out_indices": ()}])
def test_an_empty_selection_is_refused_at_load(selection):
    with pytest.raises(StageSelectionError, match=r"must select at least one stage.*got \[\]"):
        explorer.load_backbone("resnet18", pretrained=False, device="cpu", **selection)
