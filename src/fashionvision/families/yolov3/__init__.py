"""YOLOv3 on Darknet-53: model, loss, decoding, anchors, Darknet weights and task."""
