"""Flywheel's shared library: the one home of cross-service plumbing."""

from flywheel_common.aiokafka_fixes import refresh_metadata_on_stale_leaders

# Every service imports this package before it makes a Kafka client (faust's included).
refresh_metadata_on_stale_leaders()
