"""SortedWindow (mixer/audio/mixer.py): the lip-sync order statistics without a sort per block must
equal what statistics.median and heapq.nlargest give over the same last ``maxlen`` values."""

from __future__ import annotations

import collections
import heapq
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtc_mpu.mixer.audio.mixer import SortedWindow

values = st.lists(st.floats(min_value=-5.0, max_value=5.0, allow_nan=False), min_size=1, max_size=400)


@given(values, st.integers(min_value=1, max_value=100))
def test_order_statistics_equal_the_reference_ones(sequence: list[float], maxlen: int) -> None:
    window = SortedWindow(maxlen)
    reference: collections.deque[float] = collections.deque(maxlen=maxlen)
    for value in sequence:
        window.append(value)
        reference.append(value)
        assert len(window) == len(reference)
        assert window.median() == statistics.median(reference)
        for rank in {1, min(2, len(reference)), len(reference)}:
            assert window.largest(rank) == heapq.nlargest(rank, reference)[-1]


def test_empty_and_out_of_range() -> None:
    window = SortedWindow(3)
    assert not window
    with pytest.raises(IndexError):
        window.median()
    window.append(1.0)
    with pytest.raises(IndexError):
        window.largest(2)
    with pytest.raises(IndexError):
        window.largest(0)
