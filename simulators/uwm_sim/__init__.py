"""Simulators of a User Workspace Manager estate that enforce the upgrade guide rules."""
