"""``model.encoder_weights=PATH``: a local encoder state dict loaded strictly, the decoder fresh."""

from __future__ import annotations

import pytest
import torch

from fashionvision.errors import UserError
from fashionvision.families import build_model
from fashionvision.families.unet.encoder_weights import is_local_file, load_encoder_weights
from fashionvision.families.unet.losses import SegmentationLoss

pytestmark = pytest.mark.usefixtures("two_torch_threads")

ENCODER = "mobilenet_v2"


def _unet(encoder_weights=None, seed: int = 0, classes: int = 5):
    torch.manual_seed(seed)
    return build_model({"name": "unet", "encoder": ENCODER, "encoder_weights": encoder_weights}, classes)


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """What ``torch.save(smp_model.encoder.state_dict(), path)`` writes, from another seed."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(123)
    source = smp.Unet(ENCODER, encoder_weights=None, classes=3)
    with torch.no_grad():  # BN statistics off their defaults, so that buffers are checked too
        for m in source.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("encoder") / "mobilenet_v2_encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    return path, source.encoder.state_dict()


def test_encoder_weights_from_a_file_then_a_training_step(encoder_file):
    path, expected = encoder_file
    model = _unet(str(path))
    for key, value in model.net.encoder.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # the decoder and head are exactly what the same seed gives without encoder weights
    fresh = _unet(None)
    for part in ("decoder", "segmentation_head"):
        ours, theirs = getattr(model.net, part).state_dict(), getattr(fresh.net, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, masks = torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    loss = sum(SegmentationLoss("ce+dice")(model(images), masks).values())
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    first = next(iter(expected))
    assert not torch.equal(model.net.encoder.state_dict()[first], expected[first])  # it trained


def test_library_cache_files_load_too(tmp_path, encoder_file):
    """torchvision's download (an ImageNet classifier included) and a ``model.safetensors``."""
    import torchvision
    from safetensors.torch import save_file

    _, expected = encoder_file
    classifier = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch_hub = {**expected, **{k: v for k, v in classifier.items() if k.startswith("classifier.")}}
    torch.save(torch_hub, tmp_path / "mobilenet_v2-b0353104.pth")
    save_file(dict(expected), str(tmp_path / "model.safetensors"))
    for name in ("mobilenet_v2-b0353104.pth", "model.safetensors"):
        model = _unet(str(tmp_path / name))
        key = "features.18.1.running_var"
        assert torch.equal(model.net.encoder.state_dict()[key], expected[key]), name


def test_library_names_and_null_are_not_files():
    assert not is_local_file("imagenet") and not is_local_file("ssl")
    assert is_local_file("weights/encoder.pt") and is_local_file("encoder.safetensors")


def test_bad_encoder_files_are_one_line_errors_and_change_nothing(tmp_path, encoder_file):
    path, expected = encoder_file
    cases = {}
    cases["missing"] = (tmp_path / "nowhere.pth", "does not exist")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases["list"] = (tmp_path / "list.pth", "holds a list, not a state dict")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "numbers.pth")
    cases["numbers"] = (tmp_path / "numbers.pth", "not only tensors")
    (tmp_path / "junk.pth").write_bytes(b"\x00junk" * 100)
    cases["junk"] = (tmp_path / "junk.pth", "not a weights file")
    torch.save({"thing": object()}, tmp_path / "pickled.pth")
    cases["pickled"] = (tmp_path / "pickled.pth", "pickled Python objects")
    wrong = dict(expected)
    del wrong["features.0.0.weight"]
    wrong["features.1.conv.1.weight"] = torch.zeros(7)
    wrong["extra.weight"] = torch.zeros(1)
    torch.save(wrong, tmp_path / "wrong.pth")
    cases["wrong"] = (tmp_path / "wrong.pth", r"1 missing \(features.0.0.weight\); 1 unexpected \(extra.weight\); "
                      r"1 of another shape \(features.1.conv.1.weight \(7,\) in the file")
    torch.save(_unet(None, classes=3).net.state_dict(), tmp_path / "whole_unet.pth")
    cases["whole"] = (tmp_path / "whole_unet.pth", r"missing \(.* and \d+ more\).*model.weights=PATH")
    encoder = _unet(None).net.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    for name, (bad, match) in cases.items():
        with pytest.raises(UserError, match=match) as info:
            load_encoder_weights(encoder, bad, ENCODER)
        assert "\n" not in str(info.value), name
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # nothing copied
    with pytest.raises(UserError, match="model.encoder_weights='.*nowhere.pth' does not exist"):
        _unet(str(tmp_path / "nowhere.pth"))  # the same errors from the config


def test_vanilla_encoder_takes_no_encoder_file(encoder_file):
    with pytest.raises(UserError, match="vanilla"):
        build_model({"name": "unet", "encoder": "vanilla", "encoder_weights": str(encoder_file[0])}, 5)
