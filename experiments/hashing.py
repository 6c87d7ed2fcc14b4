"""Deterministic, sticky assignment of units (customers) to experiment variants.

`assign(salt, unit_id, weights)` needs no state: the same salt, unit and weights give the
same variant on every server, every time. The salt is the experiment's own (e.g. its id),
so that assignments of different experiments are independent.

How weights are honoured (weighted rendezvous hashing, a.k.a. an exponential race): for
each variant v the unit draws a fixed uniform u_v in (0, 1) from SHA-256 of
(salt, variant name, unit id), turns it into an exponential "arrival time"
-ln(u_v) / w_v, and goes to the variant that arrives first. Arrival times of independent
exponentials with rates w_v are first with probability w_v / sum(w), so shares match the
weights exactly in expectation. Each unit's draws never change, which gives stickiness
under reweighting:

- raising one variant's weight only shortens that variant's arrival times: its units stay,
  and units move to it from the others, no more than the new share requires;
- lowering one variant's weight only moves units out of that variant;
- adding a variant only moves units into it; removing one only moves its own units;
- the order of the weights mapping does not matter; only names and weights do.

(The simpler layout of variants as consecutive intervals of one uniform number shifts the
boundaries of every later variant when an earlier one grows, needlessly reshuffling units
between variants whose weights did not change.)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from experiments.errors import InvalidWeights

_UNIFORM_BITS = 53  # the precision of a float64 mantissa


def assign(salt: str, unit_id: str, weights: dict[str, float]) -> str:
    """The variant of `unit_id` in the experiment salted by `salt`.

    `weights` maps variant names to relative traffic weights (>= 0, finite, not all 0;
    any scale: {"A": 50, "B": 50} equals {"A": 1, "B": 1}). A variant of weight 0 gets
    no units. Raises `InvalidWeights` for weights that cannot be honoured.
    """
    _check_weights(weights)
    best_variant, best_arrival = "", math.inf
    for variant, weight in weights.items():
        if float(weight) == 0.0:
            continue
        arrival = -math.log(unit_uniform(salt, variant, unit_id)) / float(weight)
        # Ties are practically impossible; break them by name so the result never
        # depends on the mapping's order.
        if arrival < best_arrival or (arrival == best_arrival and variant < best_variant):
            best_variant, best_arrival = variant, arrival
    return best_variant


def unit_uniform(salt: str, variant: str, unit_id: str) -> float:
    """A fixed pseudo-random number in (0, 1) for this salt, variant and unit.

    The three strings are length-prefixed before hashing, so no two different triples
    share an input (("ab", "c") and ("a", "bc") differ).
    """
    digest = hashlib.sha256()
    for part in (salt, variant, unit_id):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    top_bits = int.from_bytes(digest.digest()[:8], "big") >> (64 - _UNIFORM_BITS)
    return (top_bits + 0.5) / 2.0**_UNIFORM_BITS


def _check_weights(weights: Mapping[str, float]) -> None:
    if not weights:
        raise InvalidWeights("weights must name at least one variant")
    for variant, weight in weights.items():
        if not isinstance(variant, str) or not variant:
            raise InvalidWeights(f"variant names must be non-empty strings, got {variant!r}")
        try:
            value = float(weight)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise InvalidWeights(
                f"weight of variant {variant!r} must be a finite number >= 0, got {weight!r}"
            )
    if not any(weight > 0 for weight in weights.values()):
        raise InvalidWeights("at least one variant needs a positive weight")
