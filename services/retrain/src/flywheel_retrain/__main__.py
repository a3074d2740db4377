"""Runs the retrain service: `python -m flywheel_retrain`."""

from flywheel_retrain.app import main

main()
