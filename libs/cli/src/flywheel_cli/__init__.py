"""flywheel: the operators' command line for a Flywheel platform."""
