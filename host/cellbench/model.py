"""Cell model files (models/*.json): load, validate and evaluate the equivalent circuit.

The format is described field by field in models/README.md and as JSON Schema in
models/model.schema.json. All quantities are SI: volts, amperes, ohms, seconds,
ampere-hours. Current is positive when it charges the cell, and SoC (0..1) rises on
charge. :func:`load_model` returns a plain-JSON dict (lists, not arrays) with every
optional section filled in, so it can be sent to the board unchanged (``MODEL <json>``).

Terminal voltage, with ``i`` charge-positive::

    v = OCV(z) + m_V*h + m0_V*s + R0(z)*i + sum(v_rc) + 2*v_T*asinh(i / (2*i0(z)))

(the last term only with a ``butler_volmer`` section; ``rc`` may hold 0, 1 or 2 pairs and
an RC pair's ``r_ohm`` may be a table on the OCV grid, driving ``dv/dt = -v/tau +
i*R(z)/tau``). ``model_error`` is the fit's held-out voltage error, sigma_V(z, C-rate),
read bilinearly (:func:`model_error_V`).

See :mod:`cellbench.ecm` for the dynamics.
"""

import copy
import math
from pathlib import Path

import numpy as np

from .errors import InputError
from .jsonfile import read_json

SCHEMA_VERSION = 1
MAX_RC_PAIRS = 2

# Defaults for optional sections; the estimator block matches docs/design.md.
DEFAULT_HYSTERESIS = {"m_V": 0.0, "m0_V": 0.0, "gamma": 0.0}
DEFAULT_FADE = {"capacity_per_cycle": 0.0, "resistance_per_cycle": 0.0,
                "first_cycle_irreversible_Ah": 0.0, "capacity_sqrt": 0.0, "rct_per_cycle": 0.0,
                "stress_current_A": 0.0, "stress_exponent": 0.0}  # docs/ageing.md
DEFAULT_ESTIMATOR = {"sigma_v_V": 0.003, "sigma_i_A": 2e-7, "q_soc": 1e-10, "q_rc_V2": 1e-8,
                     "q_h": 1e-6, "p0_soc": 0.01, "gate": 5.0}
DEFAULT_PROVENANCE = {"source": "", "fit_rmse_V": None, "created": ""}

# Optional estimator settings the firmware filter (firmware/ekf.py) reads beyond the
# design's list; no defaults here (the filter has its own).
EXTRA_ESTIMATOR_KEYS = ("bias", "q_bias_A2", "p0_bias_A2", "p0_rc_V2", "p0_h",
                        "capacity", "p0_cap", "q_cap",
                        "resistance", "q_ohm", "p0_ohm", "q_res", "p0_res")  # issue 14
BOOLEAN_ESTIMATOR_KEYS = ("bias", "capacity", "resistance")
TOP_LEVEL_KEYS = {"schema_version", "cell", "capacity_Ah", "window_V", "ocv", "r0_ohm", "rc",
                  "hysteresis", "coulombic_efficiency", "fade", "estimator", "provenance",
                  "sim_soc0", "butler_volmer", "model_error"}
# Relative tolerance for "the SoC grid is uniform".
GRID_RTOL = 1e-6


# --------------------------------------------------------------------------- reading

def load_model(path_or_dict) -> dict:
    """Return the validated model from a JSON file path or an already-parsed dict.

    Raises InputError("<field>: <message>") naming the first bad field. The input dict
    is not modified; the result is a deep copy with defaults filled in.
    """
    doc = read_json(path_or_dict, "model") if isinstance(path_or_dict, (str, Path)) else path_or_dict
    if not isinstance(doc, dict):
        raise InputError("model: must be a JSON object")
    _check_finite(doc, "model")
    model = copy.deepcopy(doc)
    _check_keys(model)
    _check_version(model)
    _check_cell(model)
    _positive(model, "capacity_Ah")
    _check_ocv(model)
    _check_window(model)
    _check_r0(model)
    _check_rc(model)
    _check_butler_volmer(model)
    _check_model_error(model)
    _fill_section(model, "hysteresis", DEFAULT_HYSTERESIS, _non_negative)
    _check_efficiency(model)
    _check_fade(model)
    _check_estimator(model)
    _check_sim_soc0(model)
    _check_provenance(model)
    return model


# --------------------------------------------------------------------------- checks

def _check_finite(value, where: str) -> None:
    """Reject NaN and infinities anywhere (json accepts the literals NaN and Infinity)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}" if where != "model" else str(key))
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _check_finite(item, f"{where}[{k}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}: must be finite, got {value}")


def _check_keys(model: dict) -> None:
    unknown = sorted(set(model) - TOP_LEVEL_KEYS)
    if unknown:
        raise InputError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")


def _check_version(model: dict) -> None:
    version = model.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InputError(f"schema_version: must be {SCHEMA_VERSION}, got {version!r}")


def _number(section: dict, name: str, prefix: str = "") -> float:
    if name not in section:
        raise InputError(f"{prefix}{name}: missing")
    value = section[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{prefix}{name}: must be a number, got {value!r}")
    return float(value)


def _positive(section: dict, name: str, prefix: str = "") -> float:
    value = _number(section, name, prefix)
    if value <= 0:
        raise InputError(f"{prefix}{name}: must be > 0, got {value}")
    return value


def _non_negative(section: dict, name: str, prefix: str = "") -> float:
    value = _number(section, name, prefix)
    if value < 0:
        raise InputError(f"{prefix}{name}: must be >= 0, got {value}")
    return value


def _section(model: dict, name: str, default=None) -> dict:
    if name not in model and default is not None:
        model[name] = dict(default)
    section = model.get(name)
    if not isinstance(section, dict):
        raise InputError(f"{name}: must be an object")
    return section


def _string(section: dict, name: str, prefix: str, required: bool) -> None:
    if name not in section and not required:
        section[name] = ""
    if not isinstance(section.get(name), str):
        raise InputError(f"{prefix}{name}: must be a string")


def _check_cell(model: dict) -> None:
    cell = _section(model, "cell")
    _string(cell, "name", "cell.", required=True)
    if not cell["name"].strip():
        raise InputError("cell.name: must not be empty")
    _string(cell, "chemistry", "cell.", required=True)
    _positive(cell, "active_mass_g", "cell.")
    _string(cell, "notes", "cell.", required=False)


def _number_list(value, where: str, min_len: int = 1) -> np.ndarray:
    if not isinstance(value, list) or len(value) < min_len:
        raise InputError(f"{where}: must be a list of at least {min_len} numbers")
    for k, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise InputError(f"{where}[{k}]: must be a number, got {item!r}")
    return np.asarray(value, dtype=float)


def _check_ocv(model: dict) -> None:
    ocv_section = _section(model, "ocv")
    _no_unknown(ocv_section, ("soc", "voltage_V", "charge_V", "discharge_V"), "ocv.")
    soc = _number_list(ocv_section.get("soc"), "ocv.soc", min_len=2)
    step = np.diff(soc)
    if np.any(step <= 0) or not np.allclose(step, step[0], rtol=GRID_RTOL, atol=0.0):
        raise InputError("ocv.soc: must be a uniform, increasing grid")
    if soc[0] < 0 or soc[-1] > 1:
        raise InputError(f"ocv.soc: must lie within [0, 1], got [{soc[0]}, {soc[-1]}]")
    voltage = _number_list(ocv_section.get("voltage_V"), "ocv.voltage_V")
    _same_length(voltage, soc, "ocv.voltage_V")
    if np.any(np.diff(voltage) <= 0):
        k = int(np.argmax(np.diff(voltage) <= 0)) + 1
        raise InputError(f"ocv.voltage_V: must be strictly increasing (fails at index {k})")
    _check_branches(ocv_section, soc)


def _check_branches(ocv_section: dict, soc: np.ndarray) -> None:
    """The optional measured branches: same grid, non-decreasing, charge above discharge."""
    branches = {}
    for name in ("charge_V", "discharge_V"):
        if name in ocv_section:
            values = _number_list(ocv_section[name], f"ocv.{name}")
            _same_length(values, soc, f"ocv.{name}")
            if np.any(np.diff(values) < 0):
                raise InputError(f"ocv.{name}: must be non-decreasing in SoC")
            branches[name] = values
    if len(branches) == 2 and np.any(branches["charge_V"] < branches["discharge_V"]):
        raise InputError("ocv.charge_V: must not lie below ocv.discharge_V")


def _same_length(values: np.ndarray, soc: np.ndarray, where: str) -> None:
    if len(values) != len(soc):
        raise InputError(f"{where}: has {len(values)} values, ocv.soc has {len(soc)}")


def _check_window(model: dict) -> None:
    """The window must lie inside the OCV range, so CC steps always reach a limit."""
    window = _number_list(model.get("window_V"), "window_V", min_len=2)
    if len(window) != 2 or window[0] >= window[1]:
        raise InputError("window_V: must be [low_V, high_V] with low_V < high_V")
    voltage = model["ocv"]["voltage_V"]
    if window[0] < voltage[0] or window[1] > voltage[-1]:
        raise InputError(f"window_V: {list(window)} lies outside the OCV range "
                         f"[{voltage[0]}, {voltage[-1]}] V")


def _soc_table_or_positive(section: dict, name: str, model: dict, where: str) -> None:
    """``section[name]`` is a number > 0 or a list of them, one per ocv.soc point."""
    value = section.get(name)
    if isinstance(value, list):
        values = _number_list(value, where)
        _same_length(values, np.asarray(model["ocv"]["soc"]), where)
        if np.any(values <= 0):
            raise InputError(f"{where}: every value must be > 0")
    else:
        _positive(section, name, where[:-len(name)])


def _check_r0(model: dict) -> None:
    _soc_table_or_positive(model, "r0_ohm", model, "r0_ohm")


def _check_rc(model: dict) -> None:
    pairs = model.get("rc")
    if not isinstance(pairs, list) or len(pairs) > MAX_RC_PAIRS:
        raise InputError(f"rc: must be a list of 0 to {MAX_RC_PAIRS} {{r_ohm, tau_s}} pairs")
    for k, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            raise InputError(f"rc[{k}]: must be an object with r_ohm and tau_s")
        _no_unknown(pair, ("r_ohm", "tau_s"), f"rc[{k}].")
        _soc_table_or_positive(pair, "r_ohm", model, f"rc[{k}].r_ohm")
        _positive(pair, "tau_s", f"rc[{k}].")


def _check_butler_volmer(model: dict) -> None:
    """Optional charge-transfer term: i0_A (scalar or per ocv.soc) and v_T in V."""
    if "butler_volmer" not in model:
        return
    section = _section(model, "butler_volmer")
    _no_unknown(section, ("i0_A", "v_T"), "butler_volmer.")
    _soc_table_or_positive(section, "i0_A", model, "butler_volmer.i0_A")
    _positive(section, "v_T", "butler_volmer.")


def _check_model_error(model: dict) -> None:
    """Optional held-out error table: soc (k knots in [0, 1]) x c_rate (m knots from 0)."""
    if "model_error" not in model:
        return
    section = _section(model, "model_error")
    _no_unknown(section, ("soc", "c_rate", "sigma_V", "look_tau_s", "method"), "model_error.")
    soc = _number_list(section.get("soc"), "model_error.soc")
    rate = _number_list(section.get("c_rate"), "model_error.c_rate")
    for name, knots in (("soc", soc), ("c_rate", rate)):
        if np.any(np.diff(knots) <= 0):
            raise InputError(f"model_error.{name}: must be increasing")
    if soc[0] < 0 or soc[-1] > 1:
        raise InputError("model_error.soc: must lie within [0, 1]")
    if rate[0] < 0:
        raise InputError("model_error.c_rate: must start at 0 or above")
    sigma = _number_list(section.get("sigma_V"), "model_error.sigma_V")
    if sigma.size != soc.size * rate.size:
        raise InputError(f"model_error.sigma_V: needs {soc.size * rate.size} values "
                         f"(soc x c_rate, row-major), got {sigma.size}")
    if np.any(sigma < 0):
        raise InputError("model_error.sigma_V: every value must be >= 0")
    _string(section, "method", "model_error.", required=False)
    if "look_tau_s" in section:
        _non_negative(section, "look_tau_s", "model_error.")


def _check_estimator(model: dict) -> None:
    est = _section(model, "estimator", DEFAULT_ESTIMATOR)
    _no_unknown(est, tuple(DEFAULT_ESTIMATOR) + EXTRA_ESTIMATOR_KEYS, "estimator.")
    for key, value in DEFAULT_ESTIMATOR.items():
        est.setdefault(key, value)
        _non_negative(est, key, "estimator.")
    for name in ("sigma_v_V", "p0_soc", "gate"):
        _positive(est, name, "estimator.")
    for key in EXTRA_ESTIMATOR_KEYS:
        if key in BOOLEAN_ESTIMATOR_KEYS and key in est and not isinstance(est[key], bool):
            raise InputError(f"estimator.{key}: must be true or false")
        if key not in BOOLEAN_ESTIMATOR_KEYS and key in est:
            _non_negative(est, key, "estimator.")


def _check_sim_soc0(model: dict) -> None:
    """Optional, simulator only: the SoC a fresh simulated cell starts at."""
    if "sim_soc0" in model:
        value = _number(model, "sim_soc0")
        if not 0.0 <= value <= 1.0:
            raise InputError(f"sim_soc0: must be within [0, 1], got {value}")


def _no_unknown(section: dict, known, prefix: str) -> None:
    """Reject misspelt keys (``m_v`` for ``m_V``) instead of silently using defaults."""
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise InputError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")


def _fill_section(model: dict, name: str, defaults: dict, check) -> None:
    section = _section(model, name, defaults)
    _no_unknown(section, defaults, f"{name}.")
    for key, value in defaults.items():
        section.setdefault(key, value)
        check(section, key, f"{name}.")


def _check_efficiency(model: dict) -> None:
    model.setdefault("coulombic_efficiency", 1.0)
    eta = _positive(model, "coulombic_efficiency")
    if eta > 1:
        raise InputError(f"coulombic_efficiency: must be in (0, 1], got {eta}")


def _check_fade(model: dict) -> None:
    _fill_section(model, "fade", DEFAULT_FADE, _non_negative)
    fade = model["fade"]
    if fade["capacity_per_cycle"] >= 1:
        raise InputError("fade.capacity_per_cycle: must be < 1 (a fraction per cycle)")
    if fade["stress_exponent"] and not fade["stress_current_A"]:
        raise InputError("fade.stress_current_A: must be > 0 when fade.stress_exponent is set")
    if fade["rct_per_cycle"] and not model["rc"]:
        raise InputError("fade.rct_per_cycle: the model has no rc pair (rc[0] is the charge transfer)")


def _check_provenance(model: dict) -> None:
    prov = _section(model, "provenance", DEFAULT_PROVENANCE)
    for key, value in DEFAULT_PROVENANCE.items():
        prov.setdefault(key, value)
    if "assumptions" in prov and not (isinstance(prov["assumptions"], list)
                                      and all(isinstance(a, str) for a in prov["assumptions"])):
        raise InputError("provenance.assumptions: must be a list of strings")
    if "structure" in prov and not isinstance(prov["structure"], dict):
        raise InputError("provenance.structure: must be an object")
    rmse = prov["fit_rmse_V"]
    if rmse is not None and (isinstance(rmse, bool) or not isinstance(rmse, (int, float)) or rmse < 0):
        raise InputError(f"provenance.fit_rmse_V: must be null or a number >= 0, got {rmse!r}")


# --------------------------------------------------------------------------- evaluation

def ocv(model: dict, soc):
    """Open-circuit voltage in V at SoC ``soc`` (scalar or array), clamped to the table ends."""
    return np.interp(soc, model["ocv"]["soc"], model["ocv"]["voltage_V"])


def ocv_slope(model: dict, soc):
    """dOCV/dSoC in V per unit SoC at ``soc`` (the slope of the table segment it falls in)."""
    grid = np.asarray(model["ocv"]["soc"], dtype=float)
    slopes = np.diff(model["ocv"]["voltage_V"]) / np.diff(grid)
    k = np.clip(np.searchsorted(grid, soc, side="right") - 1, 0, len(slopes) - 1)
    return slopes[k]


def hysteresis_V(model: dict, soc):
    """Hysteresis amplitude M(z) in V: half the gap between the ocv charge and discharge
    branches when the model has both, else the constant hysteresis.m_V."""
    branches = model["ocv"]
    if "charge_V" in branches and "discharge_V" in branches:
        half_gap = (np.asarray(branches["charge_V"]) - np.asarray(branches["discharge_V"])) / 2.0
        return np.interp(soc, branches["soc"], half_gap)
    value = float(model["hysteresis"]["m_V"])
    return np.full(np.shape(soc), value) if np.ndim(soc) else value


def r0(model: dict, soc):
    """Series resistance R0 in ohm at SoC ``soc`` (scalar table or per-SoC, clamped)."""
    value = model["r0_ohm"]
    if isinstance(value, list):
        return np.interp(soc, model["ocv"]["soc"], value)
    return np.full(np.shape(soc), float(value)) if np.ndim(soc) else float(value)


def _table(model: dict, value, soc):
    """A parameter that is a scalar or a table on the OCV grid, at ``soc`` (clamped)."""
    if isinstance(value, list):
        return np.interp(soc, model["ocv"]["soc"], value)
    return np.full(np.shape(soc), float(value)) if np.ndim(soc) else float(value)


def rc_r(model: dict, pair: int, soc):
    """Resistance in ohm of RC pair ``pair`` at SoC ``soc`` (scalar or table, clamped)."""
    return _table(model, model["rc"][pair]["r_ohm"], soc)


def butler_volmer_V(model: dict, soc, i_A):
    """Charge-transfer overpotential ``2*v_T*asinh(i/(2*i0(z)))`` in V (0 without the section);
    odd in ``i_A`` (A, charge-positive)."""
    bv = model.get("butler_volmer")
    if not bv:
        return np.zeros(np.broadcast(np.asarray(soc), np.asarray(i_A)).shape) if np.ndim(i_A) else 0.0
    i0 = _table(model, bv["i0_A"], soc)
    return 2.0 * bv["v_T"] * np.arcsinh(np.asarray(i_A) / (2.0 * i0))


def model_error_V(model: dict, soc, c_rate):
    """Held-out voltage error sigma (V) at SoC ``soc`` and C-rate ``|c_rate|`` (bilinear,
    clamped at the table's ends); 0 when the model has no ``model_error``."""
    table = model.get("model_error")
    if not table:
        return np.zeros(np.broadcast(np.asarray(soc), np.asarray(c_rate)).shape)
    zs, cs = np.asarray(table["soc"], float), np.asarray(table["c_rate"], float)
    sigma = np.asarray(table["sigma_V"], float).reshape(zs.size, cs.size)
    z = np.clip(np.asarray(soc, float), zs[0], zs[-1])
    c = np.clip(np.abs(np.asarray(c_rate, float)), cs[0], cs[-1])
    z, c = np.broadcast_arrays(z, c)
    along_c = np.stack([np.interp(c, cs, row) for row in sigma])       # (k, ...)
    flat = along_c.reshape(zs.size, -1)
    out = np.array([np.interp(zv, zs, flat[:, n]) for n, zv in enumerate(z.ravel())])
    return out.reshape(z.shape)


def series_resistance_ohm(model: dict, soc=0.5) -> float:
    """R0 plus every RC resistance, in ohm: the DC resistance at SoC ``soc`` (the
    Butler-Volmer term's small-current slope ``v_T/i0`` included)."""
    total = float(r0(model, soc)) + sum(float(rc_r(model, k, soc)) for k in range(len(model["rc"])))
    bv = model.get("butler_volmer")
    if bv:
        total += bv["v_T"] / float(_table(model, bv["i0_A"], soc))
    return total


def specific_capacity_mAh_g(model: dict, capacity_Ah: float) -> float:
    """``capacity_Ah`` in mAh per gram of active material (cell.active_mass_g)."""
    return capacity_Ah * 1000.0 / model["cell"]["active_mass_g"]
