"""The edge refiner's network, its coarse-input simulation, its band, and that it learns an edge."""

from __future__ import annotations

import pytest
import torch

from carseg.errors import CarsegError
from carseg.masks import band_mask
from carseg.models.checkpoint import REFINER_KEY, embed_refiner, load_refiner, read_checkpoint
from carseg.models.refiner import EdgeRefiner, RefinerModule, simulate_coarse


def _disk_masks(n: int = 4, size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radii = torch.linspace(14, 24, n)
    return torch.stack([((yy - size / 2) ** 2 + (xx - size / 2 + 3) ** 2 <= r**2).float() for r in radii])[:, None]


def test_refiner_keeps_the_full_size():
    net = EdgeRefiner(width=8).eval()
    image, coarse = torch.rand(2, 3, 48, 72) * 255, torch.rand(2, 1, 48, 72)
    assert net(image, coarse).shape == (2, 1, 48, 72)


def test_simulated_coarse_input_is_near_the_mask_but_not_it():
    masks = _disk_masks(8)
    coarse = simulate_coarse(masks, torch.Generator().manual_seed(0))
    assert coarse.shape == masks.shape and coarse.min() >= 0 and coarse.max() <= 1
    agree = ((coarse > 0.5) == (masks > 0.5)).float().mean()
    assert agree > 0.9  # the car is where it was
    band = band_mask(masks, 3)
    assert ((coarse > 0.5) != (masks > 0.5))[band].any()  # but its edge has moved somewhere
    assert not ((coarse > 0.5) != (masks > 0.5))[~band_mask(masks, 16)].any()  # and only near the edge


def test_band_is_the_pixels_near_the_edge():
    mask = torch.zeros(1, 1, 20, 20)
    mask[..., :, 10:] = 1
    band = band_mask(mask, 2)[0, 0]
    assert band[:, 8:12].all() and not band[:, :8].any() and not band[:, 12:].any()


@pytest.mark.slow
@pytest.mark.parametrize("residual", [False, True])
def test_refiner_learns_to_place_an_edge_from_the_photo(residual):
    """Photos whose car is a brighter disk: the loss within the band falls as the refiner trains."""
    torch.manual_seed(0)
    masks = _disk_masks(16)
    images = (masks * 150 + 50 + torch.randn_like(masks) * 5).expand(-1, 3, -1, -1).clamp(0, 255)
    module = RefinerModule(width=8, band=8, lr=5e-3, residual=residual)
    opt = torch.optim.AdamW(module.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        batch = {"image": images, "mask": masks}
        loss, *_ = module._step(batch, module.coarse_input(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_a_refiner_travels_in_the_checkpoint(small_ckpt, tmp_path):
    path = tmp_path / "with_refiner.ckpt"
    path.write_bytes(small_ckpt.read_bytes())
    assert load_refiner(path) is None
    net = EdgeRefiner(width=8)
    embed_refiner(path, net, band=12)
    loaded, band = load_refiner(path)
    assert band == 12 and loaded.width == 8
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left over


def test_a_deeper_refiner_keeps_its_shape_through_the_checkpoint(small_ckpt, tmp_path):
    """Its layers, 1x1 layers and full-size stem are read back, so the loaded network is the trained one."""
    path = tmp_path / "deep.ckpt"
    path.write_bytes(small_ckpt.read_bytes())
    net = EdgeRefiner(width=8, residual=True, context=False, layers=3, mlp=2, stem=4).eval()
    embed_refiner(path, net, band=8)
    loaded, _ = load_refiner(path)
    assert (loaded.layers, loaded.mlp, loaded.stem_width) == (3, 2, 4)
    image, coarse = torch.rand(1, 3, 32, 48) * 255, torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, coarse), net(image, coarse))


def test_a_refiner_shape_out_of_range_is_one_clear_error():
    with pytest.raises(CarsegError, match="layers=0"):
        RefinerModule(width=8, layers=0)


def test_a_damaged_refiner_entry_is_one_clear_error(small_ckpt, tmp_path):
    path = tmp_path / "damaged.ckpt"
    ckpt = read_checkpoint(small_ckpt)
    ckpt[REFINER_KEY] = {"width": 8, "band": 16, "state_dict": {"enc1.0.0.weight": torch.zeros(1)}}
    torch.save(ckpt, path)
    with pytest.raises(CarsegError, match="edge refiner cannot be read.*--no-refiner"):
        load_refiner(path)


def test_an_untrained_residual_refiner_is_the_identity():
    net = EdgeRefiner(width=8, residual=True).eval()
    image, coarse = torch.rand(2, 3, 32, 48) * 255, torch.rand(2, 1, 32, 48) * 0.98 + 0.01
    with torch.no_grad():
        out = net(image, coarse)
    torch.testing.assert_close(out, torch.logit(coarse), atol=1e-4, rtol=1e-4)
    assert not EdgeRefiner(width=8, residual=False).eval()(image, coarse).allclose(torch.logit(coarse), atol=0.1)


def test_a_residual_refiner_travels_in_the_checkpoint(small_ckpt, tmp_path):
    import shutil

    path = tmp_path / "m.ckpt"
    shutil.copy(small_ckpt, path)
    net = EdgeRefiner(width=8, residual=True)
    with torch.no_grad():
        net.head.weight.normal_()
    embed_refiner(path, net, band=6)
    loaded, band = load_refiner(path)
    assert loaded.residual and band == 6
    image, coarse = torch.rand(1, 3, 16, 16) * 255, torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, coarse), net.eval()(image, coarse))


def test_the_coarse_input_is_the_batchs_own_with_a_simulated_share():
    module = RefinerModule(width=8, simulated_fraction=0.5)
    masks = _disk_masks(64)
    own = torch.full_like(masks, 0.3)
    batch = {"mask": masks, "coarse": own}
    assert torch.equal(module.coarse_input(batch), own)  # no share asked: the batch's own
    mixed = module.coarse_input(batch, torch.Generator().manual_seed(0), simulated_fraction=0.5)
    kept = (mixed == 0.3).flatten(1).all(1)
    assert 10 < int(kept.sum()) < 54  # about half kept, the rest made from the masks
    assert torch.equal(own, torch.full_like(masks, 0.3))  # the batch itself is left as it was
    without = module.coarse_input({"mask": masks}, torch.Generator().manual_seed(0))
    assert without.shape == masks.shape and not (without == 0.3).all()
    with pytest.raises(CarsegError, match="simulated_fraction=1.5"):
        RefinerModule(simulated_fraction=1.5)


@pytest.mark.parametrize("key", ["context", "residual"])
def test_a_switch_given_as_a_word_is_refused_by_name(key):
    """`refiner.module.context=no` reaches the module as the string "no", which bool() reads as true."""
    with pytest.raises(CarsegError, match=rf"refiner\.module\.{key}='no': give true or false"):
        RefinerModule(**{key: "no"})
    assert RefinerModule(width=8, **{key: False}).net.__getattribute__(key) is False


def test_the_alpha_sharpness_fits_how_sure_the_refiner_may_be():
    """A refiner whose logits are right but timid gets a sharp alpha; one whose doubt marks its mistakes (the
    edge one pixel off, with logits near 0 there) a softer one than the sharpest."""
    from carseg.models.refiner import ALPHA_SHARPNESS, fit_alpha_sharpness

    masks = _disk_masks(8)

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, image, coarse):
            return self.logits

    batch = {"image": torch.zeros(8, 3, 64, 64), "mask": masks, "coarse": masks}
    right_but_timid = (masks * 2 - 1) * 0.5
    k, errors = fit_alpha_sharpness(Fixed(right_but_timid), [batch])
    assert k == max(ALPHA_SHARPNESS) and errors[k] < errors[1.0]
    shifted = torch.roll(masks, 1, dims=-1)  # wrong by a pixel, and unsure exactly there
    unsure = torch.where(shifted != masks, torch.full_like(masks, 0.1), (shifted * 2 - 1) * 3)
    k, errors = fit_alpha_sharpness(Fixed(unsure), [batch])
    assert k < max(ALPHA_SHARPNESS) and errors[k] == min(errors.values())


def _reach(net: EdgeRefiner) -> int:
    """How far (pixels) from the centre a change in the photo still moves the centre pixel's output."""
    net.eval()
    image, coarse = torch.full((1, 3, 256, 256), 128.0), torch.full((1, 1, 256, 256), 0.5)
    with torch.no_grad():
        base = net(image, coarse)[0, 0, 128, 128]
        for distance in range(256 // 2 - 1, 0, -1):
            changed = image.clone()
            changed[..., 128, 128 + distance] = 255.0
            if not torch.isclose(net(changed, coarse)[0, 0, 128, 128], base, atol=1e-6):
                return distance
    return 0


def test_without_context_the_refiner_sees_only_the_photo_next_to_each_pixel():
    torch.manual_seed(0)
    local, wide = EdgeRefiner(width=8, context=False), EdgeRefiner(width=8, context=True)
    for net in (local, wide):  # a trained-like last layer (the head starts at zero only with residual)
        torch.nn.init.normal_(net.head.weight)
    assert 4 <= _reach(local) <= 12 < 40 <= _reach(wide)
    image, coarse = torch.rand(2, 3, 32, 48) * 255, torch.rand(2, 1, 32, 48) * 0.98 + 0.01
    with torch.no_grad():  # untrained and residual, it too is the identity
        out = EdgeRefiner(width=8, residual=True, context=False).eval()(image, coarse)
    torch.testing.assert_close(out, torch.logit(coarse), atol=1e-4, rtol=1e-4)


def test_a_refiner_without_context_travels_in_the_checkpoint(small_ckpt, tmp_path):
    import shutil

    path = tmp_path / "m.ckpt"
    shutil.copy(small_ckpt, path)
    net = EdgeRefiner(width=8, residual=True, context=False)
    with torch.no_grad():
        net.head.weight.normal_()
    embed_refiner(path, net, band=6)
    loaded, _ = load_refiner(path)
    assert not loaded.context and loaded.residual
    image, coarse = torch.rand(1, 3, 16, 16) * 255, torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, coarse), net.eval()(image, coarse))
