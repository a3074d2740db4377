"""Flywheel retrain: retrain policy, training runs on logged data, offline gate, promotion."""
