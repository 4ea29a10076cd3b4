"""Engine settings chosen for GPUs, checked on the CPU: ``trainer=ddp``'s SyncBatchNorm default,
the fused optimizer choice per device type, and the EMA ramp scaled to the run's length."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fashionvision.cli._hydra import compose
from fashionvision.engine.config import parse_trainer_config
from fashionvision.engine.ema import ModelEMA, scaled_ramp
from fashionvision.engine.schedule import build_optimizer, kernel_options, param_groups


# ----------------------------------------------------------------------------- trainer=ddp
def test_ddp_config_leaves_sync_bn_off_and_the_key_turns_it_on() -> None:
    """SyncBatchNorm costs one all-reduce per BatchNorm layer and forward (about 75 a YOLOv3
    step): off by default; ``trainer.sync_bn=true`` still composes and reaches the schema."""
    default = compose("train", ["trainer=ddp"])["trainer"]
    assert default["sync_bn"] is False and default["device"] == "cuda"
    assert parse_trainer_config(default).sync_bn is False
    on = compose("train", ["trainer=ddp", "trainer.sync_bn=true"])["trainer"]
    assert parse_trainer_config(on).sync_bn is True


# ----------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize(("devices", "dtypes", "expected"), [
    ({"cpu"}, {torch.float32}, {"fused": True}),
    ({"cuda"}, {torch.float32}, {"fused": True}),
    ({"cuda"}, {torch.float32, torch.bfloat16}, {"fused": True}),
    ({"cuda", "cpu"}, {torch.float32}, {"foreach": None}),  # spread over devices: torch's default
    ({"mps"}, {torch.float32}, {"foreach": None}),  # other accelerators: not tested here
    ({"meta"}, {torch.float32}, {"foreach": None}),
    (set(), set(), {"foreach": None}),  # nothing to optimise
], ids=["cpu", "cuda", "cuda-mixed-dtypes", "cpu+cuda", "mps", "meta", "empty"])
def test_fused_kernels_where_the_device_supports_them(devices, dtypes, expected) -> None:
    assert kernel_options(devices, dtypes) == expected


def test_optimizer_falls_back_to_foreach_off_the_fused_devices() -> None:
    model = nn.Linear(3, 2, device="meta")
    for name in ("adamw", "sgd"):
        opt = build_optimizer(model, name, 1e-3, 5e-4)
        assert all(not g["fused"] and g["foreach"] is None for g in opt.param_groups)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_cpu_optimizer_really_steps_like_the_reference(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    reference = copy.deepcopy(model)
    opt = build_optimizer(model, name, 1e-2, 5e-4, momentum=0.9)
    assert all(g["fused"] for g in opt.param_groups)
    if name == "adamw":
        ref = torch.optim.AdamW(param_groups(reference, 5e-4), lr=1e-2, betas=(0.9, 0.999), foreach=False)
    else:
        ref = torch.optim.SGD(param_groups(reference, 5e-4), lr=1e-2, momentum=0.9, nesterov=True, foreach=False)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        for net, optim in ((model, opt), (reference, ref)):
            optim.zero_grad()
            net(x).square().mean().backward()
            optim.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


# ----------------------------------------------------------------------------- EMA ramp
def effective_weights(ema: ModelEMA, steps: int) -> torch.Tensor:
    """Weight of the initial model (index 0) and of each step's model (1..steps) in the average.

    The averaged model is a vector parameter set to the one-hot ``e_t`` before update ``t``:
    the average is linear in the models, so after ``steps`` real updates it *is* the weights.
    """
    trained = copy.deepcopy(ema.module)
    with torch.no_grad():
        for t in range(1, steps + 1):
            trained.weight.zero_()
            trained.weight[t] = 1.0
            ema.update(trained)
    return ema.module.weight.detach().double()


class OneHot(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size, dtype=torch.float64))
        with torch.no_grad():
            self.weight[0] = 1.0  # the initial model is e_0


def _mass_on_last(weights: torch.Tensor, share: float) -> int:
    """How many of the last models hold ``share`` of the average's weight."""
    tail = torch.cumsum(weights.flip(0), 0)
    return int(torch.searchsorted(tail, torch.tensor(share, dtype=tail.dtype))) + 1


def test_ema_of_a_4000_step_run_averages_far_more_than_the_last_steps() -> None:
    steps = 4000
    fixed = effective_weights(ModelEMA(OneHot(steps + 1), decay=0.9998, ramp=2000), steps)
    scaled = effective_weights(ModelEMA(OneHot(steps + 1), decay=0.9998, ramp=2000, planned_steps=steps), steps)
    for w in (fixed, scaled):
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-9) and float(w.min()) >= 0.0
    # today's fixed ramp: the average is the last handful of models
    assert _mass_on_last(fixed, 0.5) <= 10 and _mass_on_last(fixed, 0.9) <= 20
    # scaled (ramp 400): half of the weight spread over more than a quarter of the run ...
    assert _mass_on_last(scaled, 0.5) > steps // 4 and _mass_on_last(scaled, 0.9) > steps // 3
    # ... and still nothing of the random initialisation or the first tenth of the run
    assert float(scaled[0]) < 1e-6 and float(scaled[: steps // 10].sum()) < 1e-3


def test_ema_ramp_rule_and_defaults() -> None:
    assert scaled_ramp(2000, None) == 2000  # unknown length: today's behaviour
    assert scaled_ramp(2000, 4000) == 400
    assert scaled_ramp(2000, 100_000) == 2000  # long runs keep the configured ramp
    assert scaled_ramp(0, 4000) == 0  # 0 = the full decay at once, as configured
    assert scaled_ramp(2000, 3) == 1.0
    model = nn.Linear(2, 1)
    assert ModelEMA(model).ramp == 2000 and ModelEMA(model, ramp=500).ramp == 500
    ema = ModelEMA(model, ramp=2000, planned_steps=1000)
    assert ema.ramp == 100
    ema.plan(50_000)  # a time budget whose step count is learnt later
    assert ema.ramp == 2000
    ema.plan(None)
    assert ema.ramp == 2000
