"""Alembic environment of the retrain trigger's database (see flywheel_common.migrations)."""

from flywheel_common.migrations import run_environment
from flywheel_retrain import storage  # noqa: F401  (registers the retrain trigger's tables)

run_environment(version_table="alembic_version_retrain")
