"""Stargate operator: the control plane of an AI data centre, on kopf."""

__version__ = "0.1.0"
