"""Pure box math: scale, clip, pad, square, and every reason a box gives no crop."""

import pytest

from sci_fetch.crops.boxes import (
    Box,
    Geometry,
    Planned,
    Rect,
    Reject,
    clip,
    coco_box,
    make_square,
    pad,
    plan_crop,
    scale_factors,
    to_rect,
)
from sci_fetch.crops.reasons import Reason

IMG = (256, 128)


def plan(bbox, coco=IMG, real=IMG, original=True, **geometry):
    return plan_crop(bbox, coco, real, original, Geometry(**geometry))


def test_plain_box_is_its_own_rect():
    result = plan([32, 32, 64, 32])
    assert result == Planned(Rect(32, 32, 96, 64), clipped=False, scaled=False)


@pytest.mark.parametrize(
    "bbox,reason",
    [
        (None, Reason.null_bbox),
        ([None, None, None, None], Reason.null_bbox),
        ([10, None, 5, 5], Reason.null_bbox),
        ([10, 10, -5, 5], Reason.negative_size),
        ([10, 10, 5, -1], Reason.negative_size),
        ([10, 10, 0, 5], Reason.zero_area),
        ([0, 0, 0, 0], Reason.zero_area),
        ([300, 10, 20, 20], Reason.out_of_bounds),
        ([-50, 10, 50, 20], Reason.out_of_bounds),  # touches the left edge only
        ([10, 200, 20, 20], Reason.out_of_bounds),
    ],
)
def test_unusable_boxes_have_their_reason(bbox, reason):
    result = plan(bbox)
    assert isinstance(result, Reject) and result.reason is reason
    assert result.detail


def test_min_size_is_checked_on_the_clipped_box():
    assert plan([250, 10, 40, 40], min_size=8).reason is Reason.too_small  # only 6 px inside
    assert isinstance(plan([240, 10, 40, 40], min_size=8), Planned)
    assert plan([10, 10, 3, 30], min_size=4).reason is Reason.too_small


def test_box_sticking_out_is_clipped():
    assert plan([224, 96, 64, 64]) == Planned(Rect(224, 96, 256, 128), clipped=True, scaled=False)
    assert plan([-10, -10, 30, 20]) == Planned(Rect(0, 0, 20, 10), clipped=True, scaled=False)


def test_padding_is_a_fraction_of_each_side_and_stays_in_the_image():
    assert plan([32, 32, 64, 32], padding=0.25).rect == Rect(16, 24, 112, 72)
    assert plan([0, 0, 64, 32], padding=0.5).rect == Rect(0, 0, 96, 48)  # -32..96 cut at 0


def test_square_grows_the_short_side_around_the_centre():
    assert plan([32, 32, 64, 32], square=True).rect == Rect(32, 16, 96, 80)
    assert plan([160, 16, 32, 96], square=True).rect == Rect(128, 16, 224, 112)


def test_square_is_shifted_into_the_image_and_limited_to_it():
    assert plan([240, 0, 16, 64], square=True).rect == Rect(192, 0, 256, 64)  # shifted left
    assert plan([10, 100, 64, 16], square=True).rect == Rect(10, 64, 74, 128)  # shifted up
    assert plan([0, 0, 256, 16], square=True).rect == Rect(0, 0, 256, 128)  # taller than the image: stops at it


def test_medium_variant_scales_by_real_over_coco_size():
    result = plan([64, 64, 128, 64], coco=(512, 256), real=(256, 128), original=False)
    assert result == Planned(Rect(32, 32, 96, 64), clipped=False, scaled=True)


def test_animl_medium_rounding_is_accepted():
    # 1920x1080 fits 940x940 as 940x529 (528.75 rounded): not a mismatch.
    factors = scale_factors((1920, 1080), (940, 529), False)
    assert factors == (940 / 1920, 529 / 1080)
    assert scale_factors((1920, 1080), (120, 68), False) == (120 / 1920, 68 / 1080)


def test_rotated_file_is_a_size_mismatch_not_a_wrong_crop():
    result = plan([10, 10, 20, 20], coco=(2048, 1536), real=(1536, 2048))
    assert isinstance(result, Reject) and result.reason is Reason.size_mismatch
    assert "1536x2048" in result.detail and "2048x1536" in result.detail


def test_missing_coco_size():
    assert plan([10, 10, 20, 20], coco=(None, None), original=True).rect == Rect(10, 10, 30, 30)
    result = plan([10, 10, 20, 20], coco=(None, None), real=(120, 90), original=False)
    assert isinstance(result, Reject) and result.reason is Reason.cannot_scale
    assert "COCO has no width/height" in result.detail


def test_small_variant_box_below_a_pixel_is_too_small():
    # 2048 -> 120 px: a 10 px box becomes 0.6 px.
    result = plan([100, 100, 10, 10], coco=(2048, 1536), real=(120, 90), original=False)
    assert result.reason is Reason.too_small


def test_rounding_is_outwards_and_tolerates_float_noise():
    assert to_rect(Box(10.4, 10.6, 5.2, 5.0), 100, 100) == Rect(10, 10, 16, 16)
    assert to_rect(Box(49.9999999999, 0, 50.0000000001, 10), 100, 100) == Rect(50, 0, 100, 10)
    assert to_rect(Box(99.5, 0, 0.3, 10), 100, 100) == Rect(99, 0, 100, 10)


def test_helpers():
    assert coco_box([1, 2, 3, 4]) == Box(1, 2, 3, 4)
    assert clip(Box(-5, -5, 10, 10), 100, 100) == Box(0, 0, 5, 5)
    assert clip(Box(100, 0, 10, 10), 100, 100) is None
    assert pad(Box(10, 10, 10, 20), 0.1) == Box(9, 8, 12, 24)
    assert make_square(Rect(0, 0, 10, 10), 100, 100) == Rect(0, 0, 10, 10)
