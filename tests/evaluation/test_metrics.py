import numpy as np
import pytest

from carseg.evaluation.metrics import boundary_f1, image_metrics


def test_metrics_worked_by_hand():
    truth = np.zeros((4, 6), np.uint8)
    truth[1:3, 1:5] = 1  # 8 pixels
    pred = np.zeros_like(truth)
    pred[1:3, 1:3] = 1  # 4 pixels, all inside
    m = image_metrics(pred, truth)
    assert m["iou"] == pytest.approx(0.5)
    assert m["dice"] == pytest.approx(2 * 4 / (4 + 8))
    # background: 16 true negatives, 4 false negatives → IoU 16/20
    assert m["iou_2class"] == pytest.approx((0.5 + 16 / 20) / 2)
    assert m["pixel_accuracy"] == pytest.approx(20 / 24)


def test_perfect_and_disjoint():
    truth = np.zeros((10, 10), np.uint8)
    truth[2:8, 2:8] = 1
    assert all(v == pytest.approx(1.0) for v in image_metrics(truth, truth).values())
    assert image_metrics(1 - truth, truth)["iou"] == 0.0


def test_boundary_f1_tolerance():
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 16:48] = 1
    shifted = np.roll(truth, 1, axis=1)
    far = np.roll(truth, 6, axis=1)
    assert boundary_f1(shifted, truth, tolerance=2) == pytest.approx(1.0)
    assert boundary_f1(far, truth, tolerance=2) < 0.6
    assert boundary_f1(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_iou_agrees_with_image_metrics():
    import numpy as np

    from carseg.evaluation.metrics import image_metrics, iou

    rng = np.random.default_rng(3)
    pred, truth = rng.random((20, 30)) > 0.5, rng.random((20, 30)) > 0.4
    assert iou(pred, truth) == image_metrics(pred, truth)["iou"]
    assert iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_edge_composite_error_counts_halos_near_the_true_edge():
    import numpy as np

    from carseg.evaluation.metrics import edge_composite_error

    truth = np.zeros((40, 60), np.uint8)
    truth[10:30, 15:45] = 1
    photo = np.full((40, 60, 3), 240, np.uint8)  # a pale studio
    photo[truth.astype(bool)] = (120, 20, 20)  # a dark red car
    assert edge_composite_error(photo, truth.astype(np.float32), truth) == 0.0
    grown = np.zeros_like(truth)
    grown[9:31, 14:46] = 1  # one pixel of the studio around the car: a halo
    halo = edge_composite_error(photo, grown.astype(np.float32), truth)
    soft = edge_composite_error(photo, np.where(grown & ~truth, 0.5, truth).astype(np.float32), truth)
    assert 0 < soft < halo
    far = truth.copy()
    far[0, 0] = 1  # a wrong pixel far from the edge does not count
    assert edge_composite_error(photo, far.astype(np.float32), truth) == 0.0
    assert edge_composite_error(photo, np.zeros((40, 60), np.float32), np.zeros_like(truth)) == 0.0
