"""Runs the deployer service: `python -m flywheel_deployer`."""

from flywheel_deployer.app import main

main()
