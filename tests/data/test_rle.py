import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from carseg.data.carvana import read_rle_table
from carseg.data.rle import rle_decode, rle_encode


def test_small_mask_worked_by_hand():
    # Row-major order, 1-indexed: pixels 2,3 (row 0) and 6,7,8,9 (end of row 1 and start of row 2).
    mask = np.array([[0, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=np.uint8)
    assert rle_encode(mask) == "2 2 6 4"
    np.testing.assert_array_equal(rle_decode("2 2 6 4", (3, 4)), mask)


def test_empty_and_full():
    assert rle_encode(np.zeros((2, 3))) == ""
    assert rle_encode(np.ones((2, 3))) == "1 6"
    assert rle_decode("", (2, 3)).sum() == 0


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.integers(0, 1)))
def test_round_trip(mask):
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


@pytest.mark.parametrize("code", ["1 2 3", "0 2", "5 10"])
def test_bad_codes_rejected(code):
    with pytest.raises(ValueError):
        rle_decode(code, (2, 3))


def test_real_kaggle_codes_match_gifs(sample_full):
    from PIL import Image

    table = read_rle_table(sample_full / "train_masks.csv")
    assert len(table) == 128
    for name, code in table.items():
        gif = np.asarray(Image.open(sample_full / "train_masks" / name.replace(".jpg", "_mask.gif"))) > 0
        assert gif.shape == (1280, 1918)
        np.testing.assert_array_equal(rle_decode(code, gif.shape), gif)
        assert rle_encode(gif) == code
