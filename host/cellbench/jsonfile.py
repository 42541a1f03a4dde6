"""Reading the project's JSON files (boards, calibrations, models, sidecars) with one error style."""

import json
from pathlib import Path

from .errors import InputError


def read_json(path, field):
    """A JSON file holding an object, as a dict; InputError naming ``field`` otherwise."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise InputError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"{field}: {Path(path).name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{field}: {Path(path).name} must hold a JSON object")
    return data
