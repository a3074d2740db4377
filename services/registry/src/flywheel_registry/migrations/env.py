"""Alembic environment of the registry's database (see flywheel_common.migrations)."""

from flywheel_common.migrations import run_environment
from flywheel_registry import storage  # noqa: F401  (registers the registry's tables)

run_environment(version_table="alembic_version")
