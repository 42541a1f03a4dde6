"""The lab service (cellbench lab): 64 simulated channels, CPU, memory, latency, page load
(the measurement lives with the service, in cellbench.lab.bench)."""

from ..lab.bench import run  # noqa: F401
