"""Model files: validation names the bad field; the schema and the loader agree."""

import copy
import json
import math

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cellbench import model as cm
from cellbench.errors import InputError
from cellbench.paths import MODELS


def minimal() -> dict:
    """A small valid model: linear OCV 3.0 -> 4.0 V on 11 points, one RC pair."""
    soc = [k / 10 for k in range(11)]
    return {
        "schema_version": 1,
        "cell": {"name": "test cell", "chemistry": "X/Li", "active_mass_g": 0.002},
        "capacity_Ah": 1e-3,
        "window_V": [3.1, 3.9],
        "ocv": {"soc": soc, "voltage_V": [3.0 + z for z in soc]},
        "r0_ohm": 10.0,
        "rc": [{"r_ohm": 5.0, "tau_s": 30.0}],
    }


def error_of(doc) -> str:
    with pytest.raises(InputError) as info:
        cm.load_model(doc)
    return str(info.value)


def test_minimal_model_loads_with_defaults_and_is_not_mutated():
    doc = minimal()
    before = copy.deepcopy(doc)
    m = cm.load_model(doc)
    assert doc == before
    assert m["hysteresis"] == cm.DEFAULT_HYSTERESIS
    assert m["fade"] == cm.DEFAULT_FADE
    assert m["estimator"] == cm.DEFAULT_ESTIMATOR
    assert m["coulombic_efficiency"] == 1.0
    assert m["cell"]["notes"] == ""
    json.dumps(m, allow_nan=False)  # still plain JSON, ready for the MODEL command


def _set(path, value):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


BAD = [
    (_set(["schema_version"], 2), "schema_version"),
    (_delete(["schema_version"]), "schema_version"),
    (_set(["bogus"], 1), "bogus"),
    (_set(["cell", "name"], ""), "cell.name"),
    (_set(["cell", "active_mass_g"], 0), "cell.active_mass_g"),
    (_delete(["cell", "chemistry"]), "cell.chemistry"),
    (_set(["capacity_Ah"], 0.0), "capacity_Ah"),
    (_set(["capacity_Ah"], -1e-3), "capacity_Ah"),
    (_set(["capacity_Ah"], "1"), "capacity_Ah"),
    (_set(["window_V"], [3.9, 3.1]), "window_V"),
    (_set(["window_V"], [2.9, 3.9]), "window_V"),
    (_set(["window_V"], [3.1, 4.1]), "window_V"),
    (_set(["window_V"], [3.1]), "window_V"),
    (_set(["ocv", "soc", 3], 0.35), "ocv.soc"),
    (_set(["ocv", "soc", 0], -0.1), "ocv.soc"),
    (_set(["ocv", "voltage_V", 4], 3.3), "ocv.voltage_V"),
    (_set(["ocv", "voltage_V", 4], 3.2), "ocv.voltage_V"),
    (_set(["ocv", "voltage_V"], [3.0, 4.0]), "ocv.voltage_V"),
    (_set(["ocv", "charge_V"], [3.0] * 5), "ocv.charge_V"),
    (_set(["ocv", "extra"], [1]), "ocv.extra"),
    (_set(["r0_ohm"], 0.0), "r0_ohm"),
    (_set(["r0_ohm"], [1.0] * 10), "r0_ohm"),
    (_set(["r0_ohm"], [1.0] * 10 + [-1.0]), "r0_ohm"),
    (_set(["rc"], {"r_ohm": 1.0, "tau_s": 1.0}), "rc"),
    (_set(["rc", 0, "r_ohm"], [1.0] * 10 + [-1.0]), "rc[0].r_ohm"),
    (_set(["butler_volmer"], {"i0_A": 1e-4, "v_T": 0.0}), "butler_volmer.v_T"),
    (_set(["butler_volmer"], {"i0_A": 1e-4}), "butler_volmer.v_T"),
    (_set(["model_error"], {"soc": [0, 1], "c_rate": [0, 1], "sigma_V": [0.01] * 3}), "model_error.sigma_V"),
    (_set(["model_error"], {"soc": [0.5, 0.2], "c_rate": [0], "sigma_V": [0.01] * 2}), "model_error.soc"),
    (_set(["estimator"], {"capacity": 1}), "estimator.capacity"),
    (_set(["provenance"], {"assumptions": "none"}), "provenance.assumptions"),
    (_set(["rc"], [{"r_ohm": 1.0, "tau_s": 1.0}] * 3), "rc"),
    (_set(["rc", 0, "r_ohm"], 0.0), "rc[0].r_ohm"),
    (_set(["rc", 0, "tau_s"], -5.0), "rc[0].tau_s"),
    (_delete(["rc", 0, "tau_s"]), "rc[0].tau_s"),
    (_set(["hysteresis"], {"m_V": -0.01}), "hysteresis.m_V"),
    (_set(["hysteresis"], {"m_v": 0.01}), "hysteresis.m_v"),
    (_set(["coulombic_efficiency"], 1.01), "coulombic_efficiency"),
    (_set(["coulombic_efficiency"], 0), "coulombic_efficiency"),
    (_set(["fade"], {"capacity_per_cycle": 1.0}), "fade.capacity_per_cycle"),
    (_set(["fade"], {"resistance_per_cycle": -0.1}), "fade.resistance_per_cycle"),
    (_set(["estimator"], {"sigma_v_V": 0.0}), "estimator.sigma_v_V"),
    (_set(["provenance"], {"fit_rmse_V": "small"}), "provenance.fit_rmse_V"),
    (_set(["estimator"], {"bias": 1}), "estimator.bias"),
    (_set(["estimator"], {"p0_h": -1.0}), "estimator.p0_h"),
    (_set(["estimator"], {"q_sco": 1e-9}), "estimator.q_sco"),
    (_set(["sim_soc0"], 1.5), "sim_soc0"),
]


@pytest.mark.parametrize("mutate, field", BAD, ids=[f for _, f in BAD])
def test_bad_field_is_named(mutate, field):
    doc = minimal()
    mutate(doc)
    assert error_of(doc).startswith(field + ":")


def test_optional_simulator_and_filter_settings_pass_through():
    doc = minimal()
    doc["sim_soc0"] = 1.0
    doc["estimator"] = {"bias": True, "q_bias_A2": 1e-16, "p0_h": 0.1}
    m = cm.load_model(doc)
    assert m["sim_soc0"] == 1.0
    assert m["estimator"]["bias"] is True and m["estimator"]["p0_h"] == 0.1
    assert m["estimator"]["sigma_v_V"] == cm.DEFAULT_ESTIMATOR["sigma_v_V"]


def test_branches_give_a_hysteresis_table():
    doc = minimal()
    soc = doc["ocv"]["soc"]
    doc["ocv"]["charge_V"] = [3.0 + z + 0.01 + 0.02 * z for z in soc]
    doc["ocv"]["discharge_V"] = [3.0 + z - 0.01 for z in soc]
    m = cm.load_model(dict(doc, hysteresis={"m_V": 0.5}))
    assert np.allclose(cm.hysteresis_V(m, np.array([0.0, 0.5, 1.0])), [0.01, 0.015, 0.02])
    assert cm.hysteresis_V(cm.load_model(dict(minimal(), hysteresis={"m_V": 0.5})), 0.3) == 0.5


def _numeric_paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numeric_paths(item, path + (key,))
    elif isinstance(value, list):
        for k, item in enumerate(value):
            yield from _numeric_paths(item, path + (k,))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path


def _dotted(path) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


NUMERIC_PATHS = list(_numeric_paths(cm.load_model(minimal())))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NUMERIC_PATHS), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_number_anywhere_is_named(path, bad):
    doc = cm.load_model(minimal())
    _set(list(path), bad)(doc)
    message = error_of(doc)
    assert message.startswith(_dotted(path) + ":")
    assert "finite" in message


def test_non_finite_literal_in_a_file_is_rejected(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(minimal()).replace('"capacity_Ah": 0.001', '"capacity_Ah": NaN'))
    assert error_of(path).startswith("capacity_Ah:")


def test_unreadable_files_are_input_errors(tmp_path):
    assert error_of(tmp_path / "missing.json").startswith("model:")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert error_of(bad).startswith("model:")
    bad.write_text("[1, 2]")
    assert error_of(bad).startswith("model:")


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=2, max_value=200), st.floats(0.0, 0.5), st.floats(0.5, 1.0))
def test_any_uniform_grid_is_accepted(n, lo, hi):
    soc = np.linspace(lo, hi, n)
    doc = minimal()
    doc["ocv"] = {"soc": soc.tolist(), "voltage_V": (3.0 + soc).tolist()}
    doc["window_V"] = [3.0 + lo, 3.0 + hi]
    if hi - lo < 1e-3:
        return
    assert cm.load_model(doc)["ocv"]["soc"] == soc.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.2, 1.2, allow_nan=False), min_size=1, max_size=20))
def test_ocv_interpolates_and_clamps(points):
    m = cm.load_model(minimal())
    v = cm.ocv(m, np.array(points))
    expected = 3.0 + np.clip(points, 0.0, 1.0)  # the table is exactly 3 + z
    assert np.allclose(v, expected, atol=1e-12)
    assert np.allclose(cm.ocv_slope(m, np.clip(points, 0, 0.999)), 1.0)


def test_r0_table_interpolates_per_soc():
    doc = minimal()
    doc["r0_ohm"] = [10.0 + 10 * k for k in range(11)]   # 10 + 100*z ohm
    m = cm.load_model(doc)
    assert np.allclose(cm.r0(m, np.array([0.0, 0.25, 1.0, 1.5])), [10.0, 35.0, 110.0, 110.0])
    assert cm.series_resistance_ohm(m, 0.5) == pytest.approx(60.0 + 5.0)


def test_specific_capacity():
    m = cm.load_model(minimal())
    assert cm.specific_capacity_mAh_g(m, 3.5e-4) == pytest.approx(175.0)


# ----------------------------------------------------------------- schema agreement

@pytest.fixture(scope="module")
def validator():
    schema = json.loads((MODELS / "model.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_accepts_valid_models(validator):
    validator.validate(minimal())
    validator.validate(cm.load_model(minimal()))
    for path in sorted(MODELS.glob("*.json")):
        if path.name != "model.schema.json":
            validator.validate(json.loads(path.read_text()))


# Mutations JSON Schema can express (the rest need the loader's numeric checks).
SCHEMA_EXPRESSIBLE = {"schema_version", "bogus", "cell.name", "cell.active_mass_g", "cell.chemistry",
                      "capacity_Ah", "ocv.extra", "rc", "rc[0].r_ohm", "rc[0].tau_s",
                      "hysteresis.m_V", "hysteresis.m_v", "coulombic_efficiency",
                      "fade.capacity_per_cycle", "fade.resistance_per_cycle",
                      "estimator.sigma_v_V", "provenance.fit_rmse_V", "estimator.bias",
                      "estimator.p0_h", "estimator.q_sco", "sim_soc0",
                      "butler_volmer.v_T", "estimator.capacity", "provenance.assumptions"}


@pytest.mark.parametrize("mutate, field", [b for b in BAD if b[1] in SCHEMA_EXPRESSIBLE],
                         ids=[f for _, f in BAD if f in SCHEMA_EXPRESSIBLE])
def test_schema_rejects_what_the_loader_rejects(validator, mutate, field):
    doc = minimal()
    mutate(doc)
    assert not validator.is_valid(doc)
