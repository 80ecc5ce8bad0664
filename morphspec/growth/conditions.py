"""What each growth family needs of a network, as data (the R2R paper's Table 1).

The planner checks these before any tensor moves, and `morph families` prints them; each
family's own conditions are in its record (growth/catalog.py).
Activation classes:

- *keeps channels independent* (the paper's "maintains channel dependencies"): equal input
  channels give equal output channels. Every channel-wise op we support has it.
- *fixed point at zero*: σ(0) = 0, needed where new channels or blocks must start at 0.
- *idempotent*: σ(σ(x)) = σ(x), needed by Net2DeeperNet's identity layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from morphspec.growth.catalog import CATALOG, Conditions
from morphspec.growth.kinds import KindRule, kinds_where

__all__ = [  # noqa: F822 (the kind views are live module attributes: __getattr__)
    "FAMILY_CONDITIONS",
    "FIXED_POINT_AT_ZERO",
    "IDEMPOTENT",
    "KEEPS_CHANNELS_INDEPENDENT",
    "Conditions",
]

_VIEWS: dict[str, Callable[[KindRule], bool]] = {
    "KEEPS_CHANNELS_INDEPENDENT": lambda r: r.keeps_channels_independent,
    "FIXED_POINT_AT_ZERO": lambda r: r.zero_fixed,
    "IDEMPOTENT": lambda r: r.idempotent,
}


def __getattr__(name: str) -> Any:
    # Views of the kind registry, read when asked: a kind registered later is in them.
    if name in _VIEWS:
        return kinds_where(_VIEWS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FAMILY_CONDITIONS: dict[str, Conditions] = {n: f.conditions for n, f in CATALOG.items()}
"""Each family's conditions, from its record (growth/catalog.py)."""
