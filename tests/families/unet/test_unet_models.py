"""U-Net models (three encoders), weights loading and the segmentation losses."""

from __future__ import annotations

import pytest
import torch

from fashionvision.errors import UserError
from fashionvision.families import build_model
from fashionvision.families.unet.losses import (SegmentationLoss, class_weights_from_frequencies,
                                             cross_entropy, dice_loss)
from fashionvision.families.unet.model import UNet, build_unet, load_weights
from fashionvision.families.unet.vanilla import VanillaUNet, level_channels
from fashionvision.tasks.class_prior import pixel_frequencies


pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.mark.parametrize("encoder,size", [("vanilla", (67, 45)), ("vanilla", (33, 97)),
                                          ("mobilenet_v2", (67, 45)), ("resnet50", (67, 45))])
def test_output_shape_on_odd_sizes(encoder, size):
    torch.manual_seed(0)
    model = build_model({"name": "unet", "encoder": encoder, "width": 0.125}, 7)
    model.eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 7, *size)
    assert torch.isfinite(y).all()


def test_vanilla_is_the_original_layout():
    assert level_channels(1.0) == [64, 128, 256, 512, 1024]
    net = VanillaUNet(2, width=1.0, batch_norm=False)
    # the 2015 paper's network: about 31 M parameters
    assert 30.9e6 < sum(p.numel() for p in net.parameters()) < 31.1e6
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 18  # 2 per level down (5) and up (4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in VanillaUNet(2, width=0.125).modules())


def test_pretrained_download_failure_is_a_user_error(monkeypatch):
    import segmentation_models_pytorch.encoders as encoders

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(encoders, "hf_hub_download", offline)
    with pytest.raises(UserError, match="encoder_weights=null.*model.weights=PATH"):
        build_unet({"encoder": "mobilenet_v2", "encoder_weights": "imagenet"}, 5)


def test_unknown_encoder_or_weights_name_is_a_user_error():
    with pytest.raises(UserError, match="not_an_encoder"):
        build_unet({"encoder": "not_an_encoder"}, 5)
    with pytest.raises(UserError, match="vanilla"):
        build_unet({"encoder": "vanilla", "encoder_weights": "imagenet"}, 5)


def test_load_weights_variants(tmp_path):
    torch.manual_seed(0)
    source = build_unet({"encoder": "vanilla", "width": 0.125}, 5)
    # 1) a bare state dict of the wrapper
    torch.save(source.state_dict(), tmp_path / "full.pt")
    target = build_unet({"encoder": "vanilla", "width": 0.125}, 5)
    skipped = load_weights(target, tmp_path / "full.pt")
    assert not skipped and all(torch.equal(a, b) for a, b in
                               zip(source.state_dict().values(), target.state_dict().values()))
    # 2) a bare network state dict into a model with another class count: head skipped
    torch.save(source.net.state_dict(), tmp_path / "net.pt")
    other = build_unet({"encoder": "vanilla", "width": 0.125}, 9)
    skipped = other.load_pretrained(tmp_path / "net.pt")
    assert any(s.startswith("net.head.weight") for s in skipped)
    assert torch.equal(other.net.inc[0].weight, source.net.inc[0].weight)
    # 3) one of our checkpoints: the EMA weights are preferred
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    torch.save({"model": source.state_dict(), "ema": {"module": ema, "updates": 3}}, tmp_path / "ckpt.pt")
    load_weights(target, tmp_path / "ckpt.pt")
    assert torch.equal(target.net.head.bias, source.net.head.bias + 1)
    # 4) missing, pickled and unrelated files
    with pytest.raises(UserError, match="does not exist"):
        load_weights(target, tmp_path / "missing.pt")
    torch.save({"thing": object()}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="pickled Python objects"):
        load_weights(target, tmp_path / "pickled.pt")
    torch.save({"foo.bar": torch.zeros(3)}, tmp_path / "unrelated.pt")
    with pytest.raises(UserError, match="no layer matches"):
        load_weights(target, tmp_path / "unrelated.pt")


def test_state_dict_has_no_normalisation_buffers():
    model = build_unet({"encoder": "vanilla", "width": 0.125}, 3)
    assert isinstance(model, UNet)
    assert all(k.startswith("net.") for k in model.state_dict())


# --- losses ------------------------------------------------------------------------------

def test_losses_ignore_padding_and_are_named():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :, 6:] = 255
    losses = SegmentationLoss("ce+dice")(logits, target)
    assert set(losses) == {"ce", "dice"}
    sum(losses.values()).backward()
    # ignored pixels get no gradient at all
    assert logits.grad[:, :, :, 6:].abs().max() == 0
    assert logits.grad[:, :, :, :6].abs().max() > 0
    # CE equals torch's mean over valid pixels
    ref = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert losses["ce"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert set(SegmentationLoss("dice")(logits, target)) == {"dice"}
    with pytest.raises(UserError):
        SegmentationLoss("focal")


@pytest.mark.parametrize("options", [{}, {"weight": True}, {"label_smoothing": 0.1}, {"ohem": 0.5}])
def test_channels_last_logits_give_the_same_loss_and_gradient(options):
    """Channels-last logits go to the CE as a [pixels, C] view (the fast layout on a CPU);
    loss and gradient must equal those of the same logits in the usual NCHW layout, padding
    still ignored, with class weights, label smoothing and the OHEM share alike."""
    from fashionvision.families.unet.losses import hardest_pixels_cross_entropy, pixels_by_class

    torch.manual_seed(0)
    base = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 6, 7))
    target[:, :2] = 255
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0]) if options.get("weight") else None
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        logits = base.clone().contiguous(memory_format=layout).requires_grad_()
        if "ohem" in options:
            loss = hardest_pixels_cross_entropy(logits, target, options["ohem"])
        else:
            loss = cross_entropy(logits, target, weight, label_smoothing=options.get("label_smoothing", 0.0))
        loss.backward()
        results.append((loss.detach(), logits.grad.contiguous()))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert torch.allclose(grad_a, grad_b, atol=1e-7)
    assert grad_b[:, :, :2].abs().max() == 0 and grad_b[:, :, 2:].abs().max() > 0
    # the channels-last case really takes the flat view (no copy), the usual layout stays 4-D
    flat, flat_target = pixels_by_class(base.contiguous(memory_format=torch.channels_last), target)
    assert flat.shape == (2 * 6 * 7, 5) and flat_target.shape == (2 * 6 * 7,)
    assert pixels_by_class(base, target)[0].dim() == 4


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), 255)
    assert cross_entropy(logits, target).item() == 0.0
    assert dice_loss(logits, target).item() == 0.0


def test_dice_matches_hand_computation():
    # two pixels, two classes, confident logits: probs ~ one-hot of [0, 0] against target [0, 1]
    logits = torch.tensor([[[[20.0, 20.0]], [[-20.0, -20.0]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[0, 1]]])
    # class 0: |P|=2, |G|=1, |P∩G|=1 -> dice (2+1)/(3+1)=0.75; class 1: (0+1)/(0+1+1)=0.5
    expected = 1 - (0.75 + 0.5) / 2
    assert dice_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    # a perfect prediction of the classes present scores ~0 (absent classes do not count)
    perfect = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]], [[-20.0, -20.0]]]])
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)


def test_losses_are_float32_under_autocast():
    logits = torch.randn(1, 3, 8, 8).bfloat16()
    target = torch.randint(0, 3, (1, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = SegmentationLoss()(logits, target)
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_class_weights_from_mask_files(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.array([[0, 0, 0, 1], [0, 0, 255, 2]], dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 0, 0, 0]], dtype=np.uint8)).save(tmp_path / "b.png")
    counts = pixel_frequencies([tmp_path / "a.png", tmp_path / "b.png"], 4)
    assert counts.tolist() == [9, 1, 1, 0]
    weights = class_weights_from_frequencies(counts)
    assert weights[1] > weights[0] and weights[1] == pytest.approx(weights[2].item())
    # pixel-weighted mean of 1 keeps the loss scale of plain CE
    assert float((weights[:3] * torch.tensor([9.0, 1, 1])).sum() / 11) == pytest.approx(1.0)
    with pytest.raises(UserError, match="missing.png"):
        pixel_frequencies([tmp_path / "missing.png"], 4)
