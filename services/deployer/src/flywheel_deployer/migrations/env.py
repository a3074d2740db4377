"""Alembic environment of the deployer's database (see flywheel_common.migrations)."""

from flywheel_common.migrations import run_environment
from flywheel_deployer import storage  # noqa: F401  (registers the deployer's tables)

run_environment(version_table="alembic_version_deployer")
