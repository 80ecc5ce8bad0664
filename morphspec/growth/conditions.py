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

from morphspec.growth.catalog import CATALOG, Conditions
from morphspec.growth.kinds import kinds_where

__all__ = [
    "FAMILY_CONDITIONS",
    "FIXED_POINT_AT_ZERO",
    "IDEMPOTENT",
    "KEEPS_CHANNELS_INDEPENDENT",
    "Conditions",
]

# Views of the registry (growth/kinds.py), for messages and `morph families`.
KEEPS_CHANNELS_INDEPENDENT = kinds_where(lambda r: r.keeps_channels_independent)
FIXED_POINT_AT_ZERO = kinds_where(lambda r: r.zero_fixed)
IDEMPOTENT = kinds_where(lambda r: r.idempotent)


FAMILY_CONDITIONS: dict[str, Conditions] = {n: f.conditions for n, f in CATALOG.items()}
"""Each family's conditions, from its record (growth/catalog.py)."""
