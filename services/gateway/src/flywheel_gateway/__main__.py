"""Runs the gateway service: `python -m flywheel_gateway`."""

from flywheel_gateway.app import main

main()
