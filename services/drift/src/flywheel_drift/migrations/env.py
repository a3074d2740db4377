"""Alembic environment of the detector's database (see flywheel_common.migrations)."""

from flywheel_common.migrations import run_environment
from flywheel_drift import storage  # noqa: F401  (registers the detector's tables)

run_environment(version_table="alembic_version_drift")
