import pytest
import segmentation_models_pytorch as smp
import torch

from carseg.errors import CarsegError
from carseg.models.factory import create_model
from carseg.models.losses import CombinedLoss, edge_weights
from carseg.models.module import SegmentationModule


@pytest.mark.parametrize(
    "arch,encoder",
    [
        ("Unet", "resnet18"),
        ("FPN", "resnet18"),
        ("DeepLabV3Plus", "resnet18"),
        ("Unet", "tu-efficientnet_b0"),
    ],
)
def test_architectures_and_encoders(arch, encoder):
    net = create_model(arch, encoder, encoder_weights=None).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 1, 64, 96)


def test_unknown_arch_and_encoder_are_clear():
    with pytest.raises(CarsegError, match="model.net.arch"):
        create_model("NotANet", "resnet18")
    with pytest.raises(CarsegError, match="model.net.encoder_name"):
        create_model("Unet", "resnet_does_not_exist")


def test_missing_weights_download_says_how_to_go_on(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(smp, "create_model", offline)
    with pytest.raises(CarsegError, match=r"model\.net\.encoder_weights=null"):
        create_model("Unet", "resnet34", encoder_weights="imagenet")


def _module(arch="Unet", **kw):
    net = {"_target_": "carseg.models.factory.create_model", "arch": arch, "encoder_name": "resnet18"}
    loss = {"_target_": "carseg.models.losses.CombinedLoss"}
    return SegmentationModule(net=net, loss=loss, optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3}, **kw)


@pytest.mark.parametrize("arch", ["Unet", "FPN"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_module_takes_any_size(arch, channels_last):
    module = _module(arch, channels_last=channels_last).eval()
    image = torch.randint(0, 255, (2, 3, 50, 77), dtype=torch.uint8)
    with torch.no_grad():
        assert module(image).shape == (2, 1, 50, 77)


def test_combined_loss_falls_as_prediction_improves():
    loss = CombinedLoss(bce=1.0, dice=1.0, lovasz=0.5)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    good, bad = loss(target * 8 - 4, target), loss(-(target * 8 - 4), target)
    assert good < bad
    with pytest.raises(ValueError):
        CombinedLoss(bce=0, dice=0, lovasz=0)


def test_edge_weighted_loss_counts_the_edge_more():
    target = torch.zeros(1, 1, 32, 64)
    target[..., 8:24, 16:48] = 1
    near_edge, far = torch.zeros_like(target, dtype=torch.bool), torch.zeros_like(target, dtype=torch.bool)
    near_edge[..., 8, 30] = True  # on the edge
    far[..., 16, 30] = True  # deep inside the car
    plain, weighted = CombinedLoss(bce=1, dice=0), CombinedLoss(bce=1, dice=0, edge_weight=3.0, edge_band=0.05)
    good = target * 8 - 4
    wrong_at_edge, wrong_inside = good.masked_fill(near_edge, 4 - 8), good.masked_fill(far, 4 - 8)
    # unweighted, one wrong pixel costs the same anywhere; weighted, the one on the edge costs more
    assert torch.isclose(plain(wrong_at_edge, target), plain(wrong_inside, target))
    base = weighted(good, target)
    cost_edge, cost_inside = weighted(wrong_at_edge, target) - base, weighted(wrong_inside, target) - base
    assert torch.isclose(cost_edge, 3 * cost_inside, rtol=1e-3)
    # the band follows the image's width: 5% of 64 px is 4 px on either side of the edge
    w = edge_weights(target, 3.0, 0.05)
    assert w[0, 0, 16, 16 - 4] == 3 and w[0, 0, 16, 16 - 5] == 1 and w[0, 0, 16, 30] == 1
    with pytest.raises(ValueError, match="edge_weight"):
        CombinedLoss(edge_weight=0.5)
