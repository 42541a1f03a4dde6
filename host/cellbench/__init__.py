"""cellbench: host toolchain for the cellbench coin-cell test bench."""

__version__ = "0.1.0"
