"""Inference on new photos: the predictor, files and videos, ONNX export and runtime."""
