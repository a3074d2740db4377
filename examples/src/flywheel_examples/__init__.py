"""Training pipelines that register real models with Flywheel."""
