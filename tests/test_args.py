"""The shared argument checks: what each accepts and refuses, exactly (every public function relies on them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer._args import closest, finite_pair, real, whole
from explorer.errors import InvalidArgumentError


@pytest.mark.parametrize(("value", "expected"), [(4, 4), (4.0, 4), (np.int64(7), 7), (0, 0)])
def test_whole_accepts_whole_numbers(value, expected):
    assert whole("k", value) == expected and type(whole("k", value)) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 2.5, math.nan, math.inf, "3", None, [1]])
def test_whole_refuses_booleans_fractions_and_non_numbers(value):
    with pytest.raises(InvalidArgumentError, match=r"^k=.*pass a whole number"):
        whole("k", value)


def test_whole_names_its_bounds():
    with pytest.raises(InvalidArgumentError, match=r"k=11; pass a whole number from 1 to 10\. hint"):
        whole("k", 11, minimum=1, maximum=10, hint=" hint")
    with pytest.raises(InvalidArgumentError, match=r"k=-1; pass a whole number of at least 0\."):
        whole("k", -1)


@pytest.mark.parametrize("value", [True, "0.5", math.nan, -math.inf, None])
def test_real_refuses_booleans_strings_and_non_finite(value):
    with pytest.raises(InvalidArgumentError, match="the fix"):
        real("alpha", value, hint="the fix")


def test_finite_pair_and_closest():
    assert finite_pair("vrange", (0, 1.5)) == (0.0, 1.5)
    with pytest.raises(InvalidArgumentError):
        finite_pair("vrange", (0, math.nan))
    assert closest("viridiss", ["viridis", "magma"]) == " Closest names: viridis."
    assert closest("zzz", ["viridis"]) == "" and closest(3, ["viridis"]) == ""
