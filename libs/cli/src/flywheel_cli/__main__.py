"""Runs the command line: `python -m flywheel_cli`."""

from flywheel_cli.app import main

main()
