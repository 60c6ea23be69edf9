"""Telemetry sources other than the node agent: `prometheus` reads NVIDIA DCGM exporter series."""
