"""The registry's use cases, one module per kind of job; `ports` says what they need."""
