"""Cells the tests simulate, independent of the presets in models/."""

# A small LTO-like half cell (independent of the presets): flat 1.55 V plateau, steep ends.
Z = [k / 20 for k in range(21)]
OCV = [0.95, 1.43, 1.50, 1.519, 1.526, 1.530, 1.535, 1.539, 1.543, 1.547, 1.551, 1.555,
        1.559, 1.563, 1.567, 1.572, 1.577, 1.586, 1.616, 1.758, 2.6]
CELL = {"schema_version": 1,
        "cell": {"name": "test LTO/Li", "chemistry": "LTO/Li", "active_mass_g": 0.002},
        "capacity_Ah": 3.5e-4, "window_V": [1.0, 2.5],
        "ocv": {"soc": Z, "voltage_V": OCV},
        "r0_ohm": 60.0, "rc": [{"r_ohm": 40.0, "tau_s": 20.0}],
        "coulombic_efficiency": 1.0}
