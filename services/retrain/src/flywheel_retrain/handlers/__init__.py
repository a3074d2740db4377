"""The retrain trigger's use cases, one module per concern; each takes the `Deps` of ports.py."""
