"""The paper's rate-capability tables, to print next to a measured one.

From /work/shared/reference/coin-cells.md (Ding et al., 2026): mean discharge capacity of
5 cycles per rate, in mAh/g of active material, in the order the rates were run. LTO/Li
rates are C-rates (1C = 175 mA/g); Gr/Li rates are current densities in mA/g.
"""

PAPER_RATES = {
    "LTO/Li": {"rate_unit": "C", "q_unit": "mAh/g",
               "blocks": [(0.2, 210.0), (0.5, 167.0), (1.0, 150.0), (3.0, 91.0), (5.0, 59.0),
                          (10.0, 0.8), (0.2, 177.0)]},
    "Gr/Li": {"rate_unit": "mA/g", "q_unit": "mAh/g",
              "blocks": [(200.0, 129.0), (400.0, 47.0), (600.0, 34.0), (800.0, 27.0), (1000.0, 23.0),
                         (200.0, 116.0)]},
}

# Ageing tests (same source): discharge capacity (mAh/g) and charge-transfer resistance
# (ohm, EIS) at cycles 1 and 100 of the paper's 100-cycle runs; least coulombic
# efficiency (%) stated for the run. No values between: the text gives the ends only.
PAPER_AGEING = {
    "LTO/Li": {"rate": "1C", "q_mAh_g": {1: 171.0, 100: 125.0}, "r_ct_ohm": {1: 33.0, 100: 58.0},
               "ce_min_pct": 98.0},
    "Gr/Li": {"rate": "1 A/g", "q_mAh_g": {1: 24.0, 100: 12.0}, "r_ct_ohm": {1: 40.0, 100: 178.0},
              "ce_min_pct": 90.0},
}


def _near(a, b, tol):
    return abs(a - b) <= tol * max(abs(a), abs(b))


def match_reference(blocks, reference, tol=0.05):
    """Reference capacity for each block (None where the paper has none): the n-th block
    at a rate is matched with the paper's n-th block at that rate, when units agree."""
    out = []
    for k, b in enumerate(blocks):
        if reference is None or (b["rate_unit"], b["q_unit"]) != (reference["rate_unit"], reference["q_unit"]):
            out.append(None)
            continue
        n = sum(_near(prev["rate"], b["rate"], tol) for prev in blocks[:k])
        hits = [q for r, q in reference["blocks"] if _near(r, b["rate"], tol)]
        out.append(hits[n] if n < len(hits) else None)
    return out
