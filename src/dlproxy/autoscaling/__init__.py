"""Autoscaling: pure policies say how many instances a model should have; one controller acts."""
