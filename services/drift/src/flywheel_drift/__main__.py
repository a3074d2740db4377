"""Runs the drift service: `python -m flywheel_drift`."""

from flywheel_drift.app import main

main()
