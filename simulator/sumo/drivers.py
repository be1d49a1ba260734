"""The driver mix: SUMO vehicle types for careful drivers and four kinds of reckless ones.

Careful drivers are SUMO's defaults (Krauss car following with its 0.5 imperfection, 1 s
headway, 2.5 m standstill gap; LC2013 lane changes): SUMO keeps them collision-free. Each
reckless kind breaks one rule through SUMO's own behaviour parameters, and SUMO decides
whether that ends in a crash:

- ``tailgater``: 0.5 s headway, 1 m gap, reacts only once a second (``actionStepLength``),
  large speed imperfection and 20% over the limit: rear-end crashes, also into vehicles that
  cut in.
- ``red_runner``: drives on through yellow and through red for seconds after the change:
  crossing-path crashes.
- ``no_yield``: ignores vehicles that have the right of way, also those already in the
  junction: left turns across oncoming traffic, crossing paths at unsignalised junctions.
- ``pushy``: assertive, uncooperative lane changes into small gaps, short headway.

Bodies are drawn like the built-in engine's: 80% mid-size (4.5 x 1.8 m), 10% compact
(3.9 x 1.7 m), 10% large (5.3 x 2.0 m). A vehicle type is ``<driver>_<body>``.
"""

from __future__ import annotations

import numpy as np

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M

CAREFUL = "careful"
RECKLESS_KINDS: tuple[str, ...] = ("tailgater", "red_runner", "no_yield", "pushy")

_DRIVERS: dict[str, dict[str, str]] = {
    CAREFUL: {},
    "tailgater": {"sigma": "0.7", "tau": "0.5", "minGap": "1.0", "actionStepLength": "1.0",
                  "speedFactor": "normc(1.2,0.1,1.0,2.0)"},
    "red_runner": {"jmDriveAfterYellowTime": "5", "jmDriveAfterRedTime": "10",
                   "jmDriveRedSpeed": "13.9", "speedFactor": "normc(1.15,0.1,1.0,2.0)"},
    "no_yield": {"jmIgnoreFoeProb": "1", "jmIgnoreFoeSpeed": "20",
                 "jmIgnoreJunctionFoeProb": "1", "jmTimegapMinor": "0", "impatience": "1"},
    "pushy": {"lcAssertive": "5", "lcCooperative": "0", "lcSpeedGain": "5", "lcImpatience": "1",
              "lcPushy": "1", "minGap": "1.0", "tau": "0.6",
              "speedFactor": "normc(1.2,0.1,1.0,2.0)"},
}

# name, probability, length m, width m
BODIES: tuple[tuple[str, float, float, float], ...] = (
    ("midsize", 0.8, DEFAULT_LENGTH_M, DEFAULT_WIDTH_M),
    ("compact", 0.1, 3.9, 1.7),
    ("large", 0.1, 5.3, 2.0),
)


def vtype_id(driver: str, body: str) -> str:
    return f"{driver}_{body}"


def vtypes_xml() -> str:
    """The additional file that defines every driver x body vehicle type."""
    lines = ["<additional>"]
    for driver, params in _DRIVERS.items():
        for body, _, length, width in BODIES:
            attrs = {"id": vtype_id(driver, body), "vClass": "passenger",
                     "length": f"{length:g}", "width": f"{width:g}", **params}
            lines.append("    <vType " + " ".join(f'{k}="{v}"' for k, v in attrs.items())
                         + "/>")
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


class DriverMix:
    """Draws each new vehicle's type: reckless with ``reckless_fraction`` (one of the four
    kinds, equally likely), and a body."""

    def __init__(self, reckless_fraction: float, rng: np.random.Generator) -> None:
        self.reckless_fraction = reckless_fraction
        self.rng = rng
        self._body_p = np.array([p for _, p, _, _ in BODIES])
        self.size = {vtype_id(d, b): (length, width)
                     for d in _DRIVERS for b, _, length, width in BODIES}

    def draw(self, n: int) -> list[str]:
        rng = self.rng
        reckless = rng.random(n) < self.reckless_fraction
        kind = rng.integers(0, len(RECKLESS_KINDS), n)
        body = rng.choice(len(BODIES), n, p=self._body_p)
        return [vtype_id(RECKLESS_KINDS[k] if r else CAREFUL, BODIES[b][0])
                for r, k, b in zip(reckless.tolist(), kind.tolist(), body.tolist(),
                                   strict=True)]
