"""ECM simulator speed: open-loop replay of a long log and a full preset rate test."""

import numpy as np

from .. import ecm
from ..model import load_model
from ..paths import MODELS
from . import best_of

LOG_SAMPLES = 100_000


def run() -> list:
    model = load_model(MODELS / "lto-li-coin.json")
    rng = np.random.default_rng(0)
    t_s = np.cumsum(rng.uniform(0.5, 2.0, LOG_SAMPLES))
    i_A = np.repeat(rng.choice([-3.5e-4, 0.0, 3.5e-4], LOG_SAMPLES // 100), 100)
    replay_s = best_of(lambda: ecm.simulate(model, t_s, i_A, 0.5))
    currents = [c * 0.175 * model["cell"]["active_mass_g"] for c in (0.2, 0.5, 1, 3, 5, 10, 0.2)]
    rate_s = best_of(lambda: ecm.rate_test(model, currents, 5))
    return [
        {"name": "simulate throughput", "value": round(LOG_SAMPLES / replay_s / 1e3, 1),
         "unit": "k samples/s", "note": f"{LOG_SAMPLES} samples, 2 RC pairs, hysteresis, best of 3"},
        {"name": "LTO rate test (35 cycles, 70 CC steps)", "value": round(rate_s * 1e3, 1),
         "unit": "ms", "note": "ecm.rate_test, dt 1 s grid + exact cutoffs, best of 3"},
    ]
