"""Train the toy task in its own process (tests kill, signal and torchrun it).

    python tests/toy_train.py DATA_DIR RUN_DIR [trainer.key=value ...]

Writes ``RUN_DIR/final_rank<R>.pt`` (the model's state dict) when training ends normally;
exits 143 when preempted by SIGTERM and 2 when the trainer stops with a UserError.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from fashionvision.errors import UserError  # noqa: E402


def main(argv: list[str]) -> int:
    from fashionvision.data.converted import ConvertedDataset
    from fashionvision.engine.distributed import env_info, shutdown
    from fashionvision.engine.trainer import PREEMPTED_EXIT_CODE, Trainer
    from toy_task import ToyTask

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_dir, run_dir = Path(argv[0]), Path(argv[1])
    trainer = {"device": "cpu", "epochs": 3, "batch_size": 2, "workers": 0, "amp": "none",
               "channels_last": False, "cache_images": False, "gpu_augment": False, "deterministic": True,
               "warmup_epochs": 1.0, "ema_decay": 0.9, "log_images": 1, "log_every_steps": 1}
    for item in argv[2:]:
        key, value = item.split("=", 1)
        trainer[key.removeprefix("trainer.")] = yaml.safe_load(value)
    config = {"model": {"name": "toy", "width": 4}, "dataset": {"path": str(data_dir)}, "trainer": trainer}
    task = ToyTask(config["model"], ConvertedDataset.open(data_dir))
    try:
        engine = Trainer(task, trainer, run_dir, config)
        engine.fit()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if engine.status == "preempted":
        return PREEMPTED_EXIT_CODE
    torch.save(engine.model.state_dict(), run_dir / f"final_rank{env_info().rank}.pt")
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
