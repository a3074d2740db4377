"""Flywheel's shared library: the one home of cross-service plumbing."""
