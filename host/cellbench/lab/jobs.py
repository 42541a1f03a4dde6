"""A job request, checked as strictly as ``cellbench run`` checks its files.

A request (JSON object) names the protocol (``protocol``: the aurora-unicycler JSON
itself, or ``protocol_file``: the name of one in protocols/), the cell (``cell_name``),
and optionally ``mass_mg``, the estimator's model (``model``: a model JSON, or
``model_file``: a name in models/) and ``tick_ms``. The protocol is compiled for the
channel's board (and the model's voltage window) before anything is stored, so a bad
request changes nothing; every refusal is an InputError naming the request's field
(``protocol.method[3].until_time_s: ...``).
"""

import json

from .. import protocol as proto
from ..errors import InputError
from ..jsonfile import read_json
from ..model import load_model
from ..paths import MODELS, PROTOCOLS

FIELDS = ("protocol", "protocol_file", "cell_name", "mass_mg", "model", "model_file", "tick_ms")
TICK_MS = (50, 60000)  # the board's accepted tick (docs/link.md, steptable.validate)


def library(folder):
    """The names (file stems) of the JSON files in a data folder, sorted."""
    return sorted(p.stem for p in folder.glob("*.json") if not p.stem.endswith(".schema"))


def _prefixed(prefix, exc):
    """``exc``'s message with its field under ``prefix`` (``protocol.method[2]: ...``)."""
    text = str(exc)
    return InputError(text if text.startswith(prefix) else f"{prefix}.{text}")


def _named(folder, name, field):
    if not isinstance(name, str) or name not in library(folder):
        raise InputError(f"{field}: must be one of {', '.join(library(folder))}, got {name!r}")
    return read_json(folder / f"{name}.json", field)


def _number(request, field, low, high, integer=False):
    value = request.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        raise InputError(f"{field}: must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{field}: must be in [{low}, {high}], got {value}")
    return value


def check_request(request, board):
    """The checked job (dict: protocol, protocol_name, cell_name, mass_mg, model,
    model_name, tick_ms) of a request for a channel whose board file is ``board``."""
    if not isinstance(request, dict):
        raise InputError("body: must be a JSON object")
    for key in request:
        if key not in FIELDS:
            raise InputError(f"{key}: unknown field (known: {', '.join(FIELDS)})")
    cell = request.get("cell_name")
    if not isinstance(cell, str) or not cell.strip() or len(cell) > 80:
        raise InputError(f"cell_name: must be a non-empty name of at most 80 characters, got {cell!r}")
    if ("protocol" in request) == ("protocol_file" in request):
        raise InputError("protocol: give either protocol (the JSON) or protocol_file (a name)")
    if "protocol_file" in request:
        protocol, name = _named(PROTOCOLS, request["protocol_file"], "protocol_file"), request["protocol_file"]
    else:
        protocol = request["protocol"]
        if not isinstance(protocol, dict):
            raise InputError("protocol: must be a JSON object")
        name = str((protocol.get("sample") or {}).get("name") or "protocol")[:40] if isinstance(
            protocol.get("sample"), dict) else "protocol"
    if "model" in request and "model_file" in request:
        raise InputError("model: give model or model_file, not both")
    model, model_name = None, None
    if "model_file" in request:
        model_name = request["model_file"]
        model = _named(MODELS, model_name, "model_file")
    elif "model" in request:
        model, model_name = request["model"], "model"
    if model is not None:
        try:
            model = load_model(model)
        except InputError as exc:
            raise _prefixed("model", exc) from None
    mass_mg = _number(request, "mass_mg", 1e-6, 1e6)
    if mass_mg is not None and mass_mg <= 0:
        raise InputError(f"mass_mg: must be > 0, got {mass_mg}")
    tick_ms = _number(request, "tick_ms", *TICK_MS, integer=True)
    try:
        proto.compile(protocol, board, tick_ms, model)
    except InputError as exc:
        raise _prefixed("protocol", exc) from None
    return {"protocol": protocol, "protocol_name": name, "cell_name": cell.strip(),
            "mass_mg": mass_mg, "model": model, "model_name": model_name, "tick_ms": tick_ms}


def store(job_dir, checked):
    """Write a checked job's protocol (and model) under its folder; their paths."""
    protocol_path = job_dir / "protocol.json"
    protocol_path.write_text(json.dumps(checked["protocol"], indent=1))
    model_path = None
    if checked["model"] is not None:
        model_path = job_dir / "model.json"
        model_path.write_text(json.dumps(checked["model"], indent=1))
    return protocol_path, model_path
