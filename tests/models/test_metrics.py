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
