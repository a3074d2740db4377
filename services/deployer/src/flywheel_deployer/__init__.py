"""Flywheel deployer: rollouts on promotion and the desired routing state of every model."""
