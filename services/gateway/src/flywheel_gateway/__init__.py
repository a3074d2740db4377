"""Flywheel gateway: serves ONNX models over the KServe V2 protocol and logs predictions."""
