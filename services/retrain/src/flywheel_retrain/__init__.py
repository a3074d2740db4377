"""Flywheel retrain: retrain policy over alerts and metric decay, training runs, offline gate and promotion."""
