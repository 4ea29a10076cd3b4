"""The training engine: one loop for every model family (see :mod:`fashionvision.tasks.base`).

Modules: ``config`` (the trainer schema), ``trainer`` (the loop), ``checkpoint`` (atomic,
weights-only checkpoints),
``schedule`` (optimizers, warm-up + cosine), ``ema``, ``distributed`` (torchrun only),
``logging`` (progress bars, TensorBoard), ``build`` (device, loaders).
Nothing is imported here, so ``import fashionvision.engine.checkpoint`` stays light.
"""
