"""Runs the registry service: `python -m flywheel_registry`."""

from flywheel_registry.app import main

main()
