"""Flywheel gateway: KServe V2 / Open Inference Protocol serving of ONNX models with prediction logging."""
