"""Box conventions: padding worked out by hand, and round trips within rounding."""

import pytest
from hypothesis import given, settings, strategies as st

from curate.boxes import (BRACKET_ORIGINAL, BRACKET_PADDED, INTERNVL, BoxStyle, convert_box, pad_box,
                          rewrite_boxes, unpad_box)


@pytest.mark.parametrize("box, size, padded", [
    # landscape 800x600: pixels (80, 120, 400, 360); shift (800-600)//2 = 100 on y; / 800
    ([0.1, 0.2, 0.5, 0.6], (800, 600), [0.1, 0.275, 0.5, 0.575]),
    # portrait 600x800: pixels (60, 160, 300, 480); shift 100 on x; / 800
    ([0.1, 0.2, 0.5, 0.6], (600, 800), [0.2, 0.2, 0.5, 0.6]),
    # square: unchanged
    ([0.1, 0.2, 0.5, 0.6], (500, 500), [0.1, 0.2, 0.5, 0.6]),
    # odd difference 333 vs 500: shift (500-333)//2 = 83; y1 = round(0.5*333)=166 (banker's) + 83 = 249 -> 0.498
    ([0.0, 0.5, 1.0, 1.0], (500, 333), [0.0, 0.498, 1.0, 0.832]),
    # portrait from the fixtures, 200x320: x = 0+60, 200+60 over 320
    ([0.0, 0.05, 1.0, 1.0], (200, 320), [0.188, 0.05, 0.812, 1.0]),
])
def test_square_padding_matches_hand_computation(box, size, padded):
    assert pad_box(box, *size) == padded


@pytest.mark.parametrize("size", [(800, 600), (600, 800), (500, 500), (640, 427), (333, 1000)])
def test_unpad_inverts_pad_within_rounding(size):
    box = [0.123, 0.456, 0.789, 0.901]
    assert unpad_box(pad_box(box, *size), *size) == pytest.approx(box, abs=2e-3)


@settings(max_examples=300, deadline=None)
@given(st.integers(16, 4000), st.integers(16, 4000),
       st.lists(st.floats(0, 1, allow_nan=False), min_size=4, max_size=4))
def test_every_convention_round_trips(width, height, values):
    x1, x2 = sorted(values[:2])
    y1, y2 = sorted(values[2:])
    box = [round(v, 3) for v in (x1, y1, x2, y2)]
    short, side = min(width, height), max(width, height)
    pixel = 1.0 / short
    for convention, tolerance in (("padded", 0.0005 * side / short + 1.5 * pixel + 1e-3), ("thousand", 1.5e-3),
                                  ("pixels", pixel + 1e-3)):
        there = convert_box(box, "original", convention, (width, height))
        back = convert_box(there, convention, "original", (width, height))
        assert back == pytest.approx(box, abs=tolerance), convention
    padded = convert_box(box, "original", "padded", (width, height))
    assert all(0 <= v <= 1 for v in padded)


def test_rewrite_keeps_text_and_formats_like_python():
    text = "The rail [0.172, 0.61, 0.832, 0.67] and not [1, 2, 3, 4] nor [on the left]."
    out, n = rewrite_boxes(text, BRACKET_ORIGINAL, BRACKET_PADDED, lambda: (500, 333))
    assert n == 1
    assert out == "The rail [0.172, 0.572, 0.832, 0.612] and not [1, 2, 3, 4] nor [on the left]."


def test_internvl_syntax_both_ways():
    llava = "A dog [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6] runs."
    internvl, n = rewrite_boxes(llava, BRACKET_ORIGINAL, INTERNVL, lambda: None)
    assert n == 2 and internvl == "A dog <box>[[100, 200, 300, 400], [500, 500, 600, 600]]</box> runs."
    back, _ = rewrite_boxes("<ref>A dog</ref><box>[[100, 200, 300, 400]]</box> runs.", INTERNVL, BRACKET_ORIGINAL,
                            lambda: None)
    assert back == "A dog [0.1, 0.2, 0.3, 0.4] runs."
