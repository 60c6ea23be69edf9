"""The breakers of the simulated tree: a thermal-magnetic inverse-time trip curve.

Every Electrical PowerDomain is protected by a breaker rated at its `ratingWatts` (In; the load
as a multiple of it stands for the current, at a fixed voltage and power factor). A thermal-
magnetic breaker has two elements (IEC 60898-1 and UL 489 define the bands they must trip in):

- thermal (overload): a bimetal heated by I^2 with a time constant, modelled first order:
  d(theta)/dt = ((I/In)^2 - theta) / tau, tripping when theta reaches pickup^2. From cold at a
  steady multiple m > pickup it trips after t(m) = -tau * ln(1 - pickup^2 / m^2): the inverse-time
  curve;
- magnetic (short circuit): trips at once from `instantaneous` x In up.

The parameters are the *fastest* curve the standards allow, so that a run with no trip here has
none with any listed breaker of that rating whose thermal element is first order:
- pickup 1.13: IEC 60898-1's conventional non-tripping current (1.13 In must not trip within the
  conventional time, 1 h); UL 489 calibration: 100 % must hold indefinitely;
- tau 4.58 s: IEC 60898-1 lets 2.55 In trip no sooner than 1 s, and t(2.55) = 1 s here. The same
  curve trips at 1.45 In (IEC 60898-1's conventional tripping current: within 1 h) after 4.3 s and
  at 1.35 In (UL 489: within 1 h, or 2 h above 50 A) after 5.5 s, well inside both;
- instantaneous 5: the low edge of a type C breaker's magnetic band (5 to 10 In; B: 3-5, D: 10-20).
A real breaker trips later; large data-centre breakers (UL 489 / IEC 60947-2 moulded-case and
power breakers) are slower still, and their trip units are set per site: give the curve of the
site's coordination study where one exists (`TripCurve` takes any pickup, tau, instantaneous).

The continuous limit is a different matter: NEC 210.19/215.2 size a conductor and its breaker for
125 % of the continuous load (3 hours or more), the 80 % rule behind `deratePercent`; time above
`usableWatts` is reported as such (seconds over usable), it is not a trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TripCurve:
    pickup: float = 1.13
    tau_s: float = 1.0 / -math.log(1.0 - (1.13 / 2.55) ** 2)  # 4.58 s: t(2.55 In) = 1 s
    instantaneous: float = 5.0

    def trip_after(self, multiple: float) -> float:
        """Seconds from cold to a trip at a steady `multiple` of In; infinity when it never trips."""
        if multiple >= self.instantaneous:
            return 0.0
        if multiple <= self.pickup:
            return math.inf
        return -self.tau_s * math.log(1.0 - (self.pickup / multiple) ** 2)


class Breakers:
    """The thermal state of a row of breakers, stepped second by second."""

    def __init__(self, ratings_w: Array, curve: TripCurve) -> None:
        self.ratings = np.maximum(ratings_w.astype(np.float64), 1.0)
        self.curve = curve
        self.theta = np.zeros(ratings_w.size)
        self.tripped = np.zeros(ratings_w.size, dtype=bool)
        self._decay = math.exp(-1.0 / curve.tau_s)

    def step(self, loads_w: Array) -> npt.NDArray[np.bool_]:
        """One second at `loads_w`; returns the breakers that tripped in it (newly)."""
        m = loads_w / self.ratings
        heat = m * m
        self.theta = heat + (self.theta - heat) * self._decay  # exact for a load steady over 1 s
        trip = ((self.theta >= self.curve.pickup ** 2) | (m >= self.curve.instantaneous)) & ~self.tripped
        self.tripped |= trip
        return trip
