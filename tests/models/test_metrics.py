import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.classification import BinaryJaccardIndex

from carseg.models.metrics import BinaryIoU


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.floats(0.0, 1.0))
def test_binary_iou_equals_torchmetrics_jaccard(seed, updates, share):
    g = torch.Generator().manual_seed(seed)
    ours, reference = BinaryIoU(), BinaryJaccardIndex()
    for _ in range(updates):
        pred = torch.rand(2, 1, 9, 13, generator=g) < share
        target = (torch.rand(2, 1, 9, 13, generator=g) < share).int()
        ours.update(pred, target)
        reference.update(pred, target)
    assert torch.allclose(ours.compute(), reference.compute())
    ours.reset()
    ours.update(torch.zeros(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.int))
    assert float(ours.compute()) == 0.0


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_boundary_f1_matches_the_full_size_evaluation(seed):
    import cv2
    import numpy as np

    from carseg.evaluation.metrics import boundary_f1
    from carseg.models.metrics import BoundaryF1

    rng = np.random.default_rng(seed)
    truth, pred = np.zeros((2, 48, 72), np.uint8)
    cv2.ellipse(truth, (36, 24), (20, 10), 0, 0, 360, 1, -1)
    centre = (36 + int(rng.integers(-4, 5)), 24 + int(rng.integers(-4, 5)))
    cv2.ellipse(pred, centre, (20 + int(rng.integers(-5, 6)), 10), int(rng.integers(0, 30)), 0, 360, 1, -1)
    metric = BoundaryF1(tolerance=2)
    metric.update(torch.from_numpy(pred)[None, None].bool(), torch.from_numpy(truth)[None, None].int())
    empty = torch.zeros(1, 1, 8, 8)
    assert abs(float(metric.compute()) - boundary_f1(pred, truth, 2)) < 1e-4
    metric.update(empty.bool(), empty.int())  # both empty: 1
    square = torch.zeros(1, 1, 8, 8)
    square[..., 2:5, 2:5] = 1
    metric.update(empty.bool(), square.int())  # one empty: 0
    assert abs(float(metric.compute()) - (boundary_f1(pred, truth, 2) + 1) / 3) < 1e-4
