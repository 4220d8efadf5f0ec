import numpy as np
import pytest

from carseg.errors import CarsegError
from carseg.inference.background import composite, contact_shadow
from carseg.inference.predictor import Predictor
from carseg.inference.run import predict


def _car(height: int = 200, width: int = 300) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[60:140, 50:250] = True  # the body
    mask[140:150, 70:100] = mask[140:150, 200:230] = True  # two wheels reach the ground
    return mask


def test_contact_shadow_lies_under_the_car_and_nowhere_above():
    mask = _car()
    shadow = contact_shadow(mask, strength=0.6)
    assert 0.59 < shadow.max() <= 0.6 and shadow.min() >= 0
    assert shadow[:100].max() < 1e-3  # nothing on the roof or the sky
    assert shadow[150, 85] > 0.3 and shadow[150, 215] > 0.3  # under the wheels
    assert shadow[150:, :20].max() < shadow[150, 85] / 4  # fading out beside the car
    assert not contact_shadow(np.zeros((10, 10), bool)).any() and not contact_shadow(mask, 0).any()


def test_composite_with_a_shadow_keeps_the_car_and_darkens_the_ground():
    mask = _car()
    image = np.full((*mask.shape, 3), 90, np.uint8)
    white = np.full_like(image, 255)
    plain, shaded = composite(image, mask, white), composite(image, mask, white, shadow=0.5)
    assert np.array_equal(plain[mask], shaded[mask])
    assert shaded[152, 85].max() < 200 and (shaded[:50] == 255).all()


def test_predict_shadow_needs_a_background_and_a_strength_in_range(small_ckpt, tiny_data, tmp_path):
    predictor = Predictor(ckpt=small_ckpt, device="cpu", precision="32")
    photo = sorted((tiny_data / "train").glob("*.jpg"))[0]
    with pytest.raises(CarsegError, match="--shadow darkens the ground of a composite: give --background"):
        predict([photo], predictor, out=tmp_path, shadow=0.5)
    with pytest.raises(CarsegError, match="--shadow 2.0: give a strength from 0 to 1"):
        predict([photo], predictor, out=tmp_path, background="white", shadow=2.0)
    assert not any(tmp_path.iterdir())


def test_edge_matte_keeps_probabilities_only_near_the_edge():
    from carseg.inference.predictor import MATTE_BAND, edge_matte

    mask = np.zeros((60, 60), np.uint8)
    mask[20:40, 20:40] = 1
    prob = np.where(mask, 0.7, 0.3).astype(np.float32)  # a model's probabilities agree with its mask
    matte = edge_matte(mask, prob)
    assert matte[30, 30] == 1.0 and matte[2, 2] == 0.0  # far inside, far outside: the mask
    assert matte[20, 30] == matte[20 + MATTE_BAND - 1, 30] == np.float32(0.7)  # inside, near the edge
    assert matte[19, 30] == matte[20 - MATTE_BAND, 30] == np.float32(0.3)  # outside, near the edge
    assert matte[20 - MATTE_BAND - 2, 30] == 0.0 and matte[20 + MATTE_BAND + 2, 30] == 1.0
    assert np.array_equal(edge_matte(np.zeros((5, 5), np.uint8), np.full((5, 5), 0.2)), np.zeros((5, 5)))
