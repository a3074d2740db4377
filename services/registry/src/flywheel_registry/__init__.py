"""Flywheel registry: model versions, validated ONNX artifacts, aliases, lineage, promotions."""
