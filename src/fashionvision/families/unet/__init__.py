"""U-Net (vanilla or smp encoders): model, losses and task."""
