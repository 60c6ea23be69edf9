"""The node agent: reads GPU telemetry (NVML, or a simulator) and enforces the operator's power limit.

- `backend`: what a GPU source looks like to the agent (readings, limit outcomes).
- `nvml`: the real source, through nvidia-ml-py (`pynvml`).
- `simulate`: a plausible source without GPUs, for the demo and the tests.
- `runner`: the loop that writes `status.telemetry` of GPUNodes and applies `status.powerLimitWatts`.
"""
