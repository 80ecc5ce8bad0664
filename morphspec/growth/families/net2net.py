"""Net2Net (Chen et al. 2015): Net2WiderNet copies channels, Net2DeeperNet adds identities.

Widening a space from a to b: each new channel j copies a random old channel g(j) (rows,
biases and channel-wise parameters, batchnorm statistics included), so x_j = x_{g(j)} on
every tensor of the space. A consumer divides the columns of every old channel c by its
count n_c = 1 + |{j : g(j) = c}| and gives each copy the same column, so the copies' sum
reads n_c · W[:, c]/n_c = W[:, c] · x_c: the function is unchanged (to float round-off of
the division). `--noise X` splits each group's columns as W/n + R_j for a copy and
W/n - ΣR_j for the original, R of relative size X: the sum is still exact, and the copies
differ from the start. The mapping g is drawn from the seed and the space's name.

Deepening appends repeat copies whose layers start as the identity (identity linear or
conv kernel, batchnorm set to the identity in eval mode); each activation in them must be
idempotent on what it receives (relu after a relu). Parameters are not preserved: the
consumers' old columns are divided.
"""

from __future__ import annotations

import torch

from morphspec.growth.families.base import Family, GrowOptions, TensorGetter
from morphspec.growth.graph import ChannelSpace, Role
from morphspec.growth.init import generator
from morphspec.growth.plan import Plan

__all__ = ["Net2Net"]


class Net2Net(Family):
    name = "net2net"
    identity_deepen = True
    ties = "refuse"

    def __init__(
        self, plan: Plan, options: GrowOptions | None = None, get: TensorGetter | None = None
    ) -> None:
        self._maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(plan, options, get)

    def warnings(self) -> list[str]:
        notes = super().warnings()
        if not self.options.noise and any(self.applies_to(s) for s in self.plan.graph.spaces):
            notes.append(
                "net2net without --noise: each new channel is an exact copy of an old one, and"
                " copies get identical gradients, so training never tells them apart; pass"
                " --noise (e.g. 0.01) to split the copies' columns unequally (still exact)"
            )
        return notes

    def mapping(self, space: ChannelSpace) -> tuple[torch.Tensor, torch.Tensor]:
        """g (the old channel each new one copies) and the count of each old channel."""
        if space.id not in self._maps:
            a = self.sizes[space.id]
            gen = generator(self.options.seed, f"space:{space.label}", "net2net")
            g = torch.randint(0, a, (space.size - a,), generator=gen)
            counts = torch.ones(a, dtype=torch.int64).index_add_(0, g, torch.ones_like(g))
            self._maps[space.id] = (g, counts)
        return self._maps[space.id]

    def consume(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str) -> None:
        a = self.sizes[space.id]
        g, counts = self.mapping(space)
        old = v.narrow(d, 0, a)
        shape = [1] * v.dim()
        shape[d] = a
        old.div_(counts.view(shape).to(v.dtype))
        v.narrow(d, a, space.size - a).copy_(v.index_select(d, g))
        noise = self.options.noise
        if not noise or old.numel() < 2:
            return
        scale = float(old.double().std()) * noise
        gen = generator(self.options.seed, key, "net2net-split")
        for j, c in enumerate(g.tolist()):
            col = v.narrow(d, a + j, 1)
            r = (torch.randn(col.shape, generator=gen, dtype=torch.float64) * scale).to(v.dtype)
            col.add_(r)
            v.narrow(d, c, 1).sub_(r)

    def produce(self, v: torch.Tensor, d: int, space: ChannelSpace, key: str, role: Role) -> None:
        a = self.sizes[space.id]
        g, _ = self.mapping(space)
        v.narrow(d, a, space.size - a).copy_(v.index_select(d, g))
