"""The ``gpu`` tier: the engine on a CUDA device (``python -m pytest -m gpu tests/gpu``).

Each test skips with its reason where CUDA (or a second GPU) is absent, so the tier collects and
passes on a CPU machine with every test skipped. On a GPU it covers what the CPU suite cannot:

* a short training of both families in bf16 and in fp16 (GradScaler), channels-last, colour
  jitter on the GPU, the fused optimizer on CUDA; then ``fashion-eval``'s evaluation, ONNX export
  and prediction from the trained run;
* ``trainer.compile=true``;
* the YOLO loss without a device-to-host sync (``torch.cuda.set_sync_debug_mode("error")``);
* per-rank colour generators that live on the GPU;
* two ranks over NCCL through ``torchrun`` (where two GPUs exist), with SyncBatchNorm turned on
  and with a wall-clock budget.

The models are tiny (64 px, width 1/16 YOLOv3, a small vanilla U-Net) and the data is the
6-image ``tiny_ccp`` folder of the suite, so each test takes seconds once CUDA is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if HAS_CUDA else 0

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")]

MODELS = {
    "yolo": ["model=yolo", "model.width=0.0625", "model.image_size=64", "anchors=coco"],
    "unet": ["model=unet", "model.encoder=vanilla", "model.width=0.125", "model.image_size=64"],
}
# small enough for seconds, long enough for several optimizer steps and two validations
SHORT = ["trainer.device=cuda", "trainer.epochs=2", "trainer.batch_size=2", "trainer.limit_images=6",
         "trainer.workers=0", "trainer.log_images=1", "trainer.warmup_epochs=0.5", "trainer.val_every=1"]


def _train(kind: str, data: Path, run: Path, *overrides: str):
    from fashionvision.cli._hydra import compose
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.trainer import Trainer
    from fashionvision.families import build_task

    cfg = compose("train", [*MODELS[kind], *SHORT, f"dataset.path={data}", *overrides])
    task = build_task(cfg["model"], ConvertedDataset.open(data), cfg["augment"], cfg["anchors"])
    trainer = Trainer(task, cfg["trainer"], run, cfg)
    trainer.fit()
    return trainer


def _check_trained(trainer, run: Path) -> None:
    assert trainer.status == "completed" and trainer.step > 0 and trainer.skipped_steps == 0
    assert trainer.device.type == "cuda" and trainer.task.gpu_color  # the colour jitter ran on the GPU
    assert all(group["fused"] for group in trainer.optimizer.param_groups)  # fused on CUDA too
    conv = next(p for p in trainer.model.parameters() if p.ndim == 4)
    assert conv.is_cuda and conv.dtype == torch.float32  # amp keeps float32 master weights
    assert conv.is_contiguous(memory_format=torch.channels_last)
    primary = trainer.task.primary_metric
    assert np.isfinite(trainer.metrics[primary])
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == trainer.step
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    for p in trainer.model.parameters():
        assert torch.isfinite(p).all()


def _evaluate_export_predict(run: Path, data: Path, out: Path, device: str = "cuda") -> None:
    from fashionvision.cli.eval import evaluate
    from fashionvision.inference.export import export_onnx
    from fashionvision.inference.predictor import load_predictor

    report = evaluate({"ckpt": str(run), "split": "val", "device": device, "batch_size": 2, "workers": 0,
                       "dataset": {"path": str(data)}}, out / "eval")
    assert report["eval"]["device"].startswith(device) and report["eval"]["images"] == 2
    assert np.isfinite(report[report["eval"]["primary_metric"]])

    on_cpu = load_predictor(run, device="cpu")
    export = export_onnx(on_cpu, out / "model.onnx")  # parity with PyTorch checked inside
    assert export["parity_ok"]

    on_gpu = load_predictor(run, device=device)
    image = np.random.default_rng(0).integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    got = on_gpu(image, conf=0.001)
    onnx_pred = load_predictor(out / "model.onnx")(image, conf=0.001)
    if on_gpu.kind == "detector":
        assert got["boxes"].shape[1:] == (4,) and len(got["boxes"]) == len(got["scores"])
        assert np.isfinite(got["boxes"]).all() and np.isfinite(got["scores"]).all()
        assert set(onnx_pred) == set(got)
    else:
        assert got["mask"].shape == onnx_pred["mask"].shape == image.shape[:2]
        assert (got["mask"] == onnx_pred["mask"]).mean() > 0.95  # GPU (TF32 allowed) against ONNX on a CPU


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("kind", ["yolo", "unet"])
def test_short_training_then_eval_export_predict(kind: str, amp: str, tiny_ccp: Path, tmp_path: Path) -> None:
    trainer = _train(kind, tiny_ccp, tmp_path / "run", f"trainer.amp={amp}", "trainer.channels_last=true",
                     "trainer.gpu_augment=true")
    assert trainer.amp and trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    _check_trained(trainer, tmp_path / "run")
    _evaluate_export_predict(tmp_path / "run", tiny_ccp, tmp_path)


@pytest.mark.parametrize("kind", ["yolo", "unet"])
def test_compiled_training(kind: str, tiny_ccp: Path, tmp_path: Path) -> None:
    trainer = _train(kind, tiny_ccp, tmp_path / "run", "trainer.compile=true", "trainer.amp=bf16",
                     "trainer.channels_last=true")
    assert hasattr(trainer.train_model, "_orig_mod")  # torch.compile's wrapper
    _check_trained(trainer, tmp_path / "run")
    # the checkpoint holds the plain module's names (no "_orig_mod." prefix): it loads for inference
    from fashionvision.inference.predictor import load_predictor

    predictor = load_predictor(tmp_path / "run", device="cuda")
    assert predictor.model.training is False


def test_yolo_loss_runs_without_a_host_sync() -> None:
    """With the collate's ``max_targets`` the loss's forward never waits for the device."""
    from fashionvision.families.yolov3.loss import YOLOLoss
    from fashionvision.families.yolov3.model import YOLOv3

    torch.manual_seed(0)
    model = YOLOv3(5, width=0.0625, depth=0.34).cuda()
    outputs = model(torch.rand(3, 3, 64, 64, device="cuda"))
    targets = torch.tensor([[0, 1, 5, 5, 40, 50], [0, 3, 10, 20, 30, 60], [2, 2, 2, 2, 60, 62],
                            [2, 4, 30, 30, 30, 40]], dtype=torch.float32)  # the last one degenerate
    crit = YOLOLoss(5, multi_anchor_iou=0.2, neighbor_cells=True, xy_scale=2.0)
    reference = crit(outputs, targets, model.anchors.cpu(), model.strides)  # targets on the CPU: counted there
    targets = targets.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = crit(outputs, targets, model.anchors, model.strides, max_targets=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for key, value in reference.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=1e-6)
    (losses["box"] + losses["obj"] + losses["cls"]).backward()


def test_colour_generators_live_on_the_gpu_and_differ_by_rank() -> None:
    from fashionvision.data.gpu_augment import RankGenerator, gpu_color_jitter

    images = torch.full((4, 3, 16, 16), 128, dtype=torch.uint8, device="cuda")
    before = torch.cuda.get_rng_state()

    def jitter(rank: int) -> torch.Tensor:
        generator = RankGenerator(0, rank).get(images.device)
        assert generator.device.type == "cuda"
        return gpu_color_jitter(images, 0.02, 0.6, 0.4, 0.3, generator=generator, max_value=255.0)

    rank0, rank1 = jitter(0), jitter(1)
    assert not torch.equal(rank0, rank1) and torch.equal(rank0, jitter(0))
    assert torch.equal(torch.cuda.get_rng_state(), before)  # the global CUDA stream is untouched
    # once the colour constants are on the device, a jittered batch never waits for it
    generator = RankGenerator(0, 2).get(images.device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu_color_jitter(images, 0.02, 0.6, 0.4, 0.3, generator=generator, max_value=255.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- two GPUs
def _torchrun(run: Path, data: Path, *overrides: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "fashionvision.cli.train", *MODELS["yolo"], "trainer=ddp", "trainer.batch_size=2",
               "trainer.workers=0", "trainer.log_images=0", "trainer.limit_images=6", f"dataset.path={data}",
               f"hydra.run.dir={run}", *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA devices for a 2-rank NCCL run ({GPUS} visible)")
@pytest.mark.parametrize("sync_bn", [False, True], ids=["default", "sync_bn"])
def test_two_ranks_over_nccl(sync_bn: bool, tiny_ccp: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = _torchrun(run, tiny_ccp, "trainer.epochs=2", f"trainer.sync_bn={str(sync_bn).lower()}", timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] > 0
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert last["world_size"] == 2


@pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA devices for a 2-rank NCCL run ({GPUS} visible)")
def test_two_ranks_over_nccl_stop_together_on_a_time_budget(tiny_ccp: Path, tmp_path: Path) -> None:
    """Every rank must leave the loop at the same step (NCCL would hang otherwise)."""
    run = tmp_path / "run"
    done = _torchrun(run, tiny_ccp, "trainer.epochs=1000", "trainer.max_time=40s", timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "time_budget" and summary["train_seconds"] < 60
