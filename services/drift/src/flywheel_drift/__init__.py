"""Flywheel drift: streaming model metrics, data and concept drift detection and alerts."""
