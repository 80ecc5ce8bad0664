"""The conditions on new layers that every family shares: new residual blocks start at
zero output (in eval and train mode, and stay near zero after the first steps), other new
layers start as identities (Net2DeeperNet) or follow the family's own rule, and a new
projection shortcut starts as the identity. Checking records what filling needs in
`Facts` and changes nothing else."""

from __future__ import annotations

from typing import ClassVar

from morphspec.arch.nodes import Node
from morphspec.errors import Problem
from morphspec.growth.families.facts import Facts, leaves, rule_or_fail, units_of
from morphspec.growth.kinds import KindRule, kinds_where, rule_of
from morphspec.growth.plan import Plan

__all__ = ["NewLayers"]

_rule = rule_or_fail


class NewLayers:
    """Mixed into `Family`: the checks of new blocks, new layers and new projections."""

    plan: Plan
    name: ClassVar[str]
    exact: ClassVar[bool]
    identity_deepen: ClassVar[bool]

    def _check_new(self, label: str, nodes: list[Node], facts: Facts) -> list[Problem]:
        """New residual blocks follow the residual rule (every exact family); other new
        layers start as identities (Net2DeeperNet) or follow the family's own rule."""
        units = [u for n in nodes for u in units_of(n)]
        if self.exact and all(u.container == "residual" for u in units):
            return [p for u in units for p in self.check_residual_block(u, facts)]
        if self.identity_deepen:
            return self._check_identity_run(label, nodes, facts)
        return [p for u in units for p in self.check_new_block(u, facts)]

    def check_new_block(self, node: Node, facts: Facts) -> list[Problem]:
        """Conditions on one new non-residual unit; families that deepen override this."""
        return []

    def check_residual_block(self, node: Node, facts: Facts) -> list[Problem]:
        """A new residual block must start at zero output, so that it is the identity in
        eval and in train mode and stays near zero after the first optimizer steps.

        - Its body ends (after ops that map 0 to 0) in a kind with a `zero_gain` (batchnorm):
          those parameters (gain and shift) start at zero (zero-init residual). Its output
          is then exactly 0 in both modes, and the layers before it keep generic values, so
          the gain's gradient Σ g·x̂ is non-zero and grows the block from zero at the
          optimizer's pace. (Zeroing the layer before the batchnorm instead would normalise
          an exactly-zero input: x̂ = 0 freezes the gain, and any step away from zero is
          amplified by 1/√eps; docs/growth.md derives it.)
        - Otherwise its last layer outputs zero by the family's own rule (`zero_output`:
          R2R pairs, NetMorph and Net2Net a zero layer).
        Its `post` ops must be the identity on the stream they receive."""
        if node.shortcut is not None:
            return [Problem(
                f"new block '{node.path}' has a projection shortcut; appended copies must keep"
                " their input shape so the identity shortcut carries the stream",
                node.mark,
            )]  # fmt: skip
        problems: list[Problem] = []
        nonneg = self.plan.graph.input_nonneg.get(node.path, False)
        for post in node.post:
            # a nested block (gpt_mini's ffn): it starts at zero too
            if post.container == "residual":
                problems.extend(self.check_residual_block(post, facts))
                continue
            rule = rule_of(post.kind)
            on_nonneg = rule is not None and rule.identity_on_nonneg
            if (rule is not None and rule.is_identity) or (on_nonneg and nonneg):
                continue
            why = (
                "the stream it receives can be negative"
                if on_nonneg
                else "it is not the identity on the stream"
            )
            if rule is not None and rule.mixes_channels:
                why = (
                    "a post-norm block normalises x + F(x), and norm(x) ≠ x: no choice of the"
                    " new block's weights makes it the identity (grow pre-norm blocks)"
                )
            problems.append(Problem(
                f"new block '{node.path}': its post op {post.kind} must be the identity on"
                f" the incoming stream so the block starts as the identity, but {why}",
                post.mark,
            ))  # fmt: skip
        trailing: list[Node] = []
        terminal: Node | None = None
        for child in reversed(leaves(node.children)):
            child_rule = rule_of(child.kind)
            if child_rule is not None and child_rule.keeps_channels_independent:
                trailing.append(child)
                continue
            terminal = child
            break
        for op in trailing:
            op_rule = rule_of(op.kind)
            if op_rule is None or not op_rule.zero_fixed:
                problems.append(Problem(
                    f"new block '{node.path}': '{op.path}' ({op.kind}) does not map 0 to 0, so"
                    " the block cannot start at zero",
                    op.mark,
                ))  # fmt: skip
        gains = [op for op in trailing if _rule(op).zero_gain]
        if gains:
            last = gains[-1]  # `trailing` runs backwards: the first one after the last layer
            facts.zero_keys.update(last.key(p) for p in _rule(last).zero_gain)
            return problems
        t_rule = rule_of(terminal.kind) if terminal is not None else None
        matrix = t_rule.out_matrix() if t_rule is not None else None
        if terminal is None or matrix is None:
            what = f"a {terminal.kind}" if terminal else "nothing"
            able = ", ".join(sorted(kinds_where(lambda r: r.out_matrix() is not None)))
            return [*problems, Problem(
                f"new block '{node.path}': its body ends in {what}; a new residual block needs"
                f" a layer that writes the stream there ({able}), or a batchnorm after one",
                node.mark,
            )]  # fmt: skip
        # a mixture's experts each write the stream: every expert's matrix outputs zero
        nested = _rule(terminal).nested
        copies = [p for p in terminal.params if p.startswith(f"{nested}.") and p.endswith(matrix)]
        for param in copies if nested and copies else [matrix]:
            problems += self.zero_output(node, terminal, terminal.key(param), facts)
        return problems

    def zero_output(self, block: Node, terminal: Node, weight: str, facts: Facts) -> list[Problem]:
        """Make `terminal` (whose matrix is `weight`), the last layer of new residual
        `block`, output zero. By default (NetMorph's rule, which Net2Net borrows: its
        identity layers would double the stream inside a residual) its weight and bias are
        zero: the first step then moves only that layer, by an amount proportional to the
        learning rate."""
        facts.zero_keys.update((weight, weight.removesuffix("weight") + "bias"))
        return []

    def _check_projection(self, shortcut: Node, facts: Facts) -> list[Problem]:
        idents = [_rule(c).identity for c in shortcut.children]
        first = shortcut.children[0] if shortcut.children else None
        ok = idents in (["matrix"], ["matrix", "batchnorm"])
        if ok and first is not None and "kernel" in first.args:
            ok = first.args["kernel"] == 1 and first.args["stride"] == 1
            ok = ok and first.args["padding"] == 0
        if ok:
            for child in shortcut.children:
                facts.identity_layers[child.path] = child
            return []
        return [Problem(
            f"new projection shortcut '{shortcut.path}' must be a 1x1 conv (stride 1) or a"
            " linear, optionally followed by batchnorm, to start as the identity",
            shortcut.mark,
        )]  # fmt: skip

    def _check_identity_run(self, where: str, nodes: list[Node], facts: Facts) -> list[Problem]:
        """Net2DeeperNet: every new layer starts as the identity, so each activation among
        them sees what entered the first one, and must be idempotent on it."""
        for node in nodes:
            if node.container == "residual":
                return [Problem(
                    f"{where}: '{node.path}' is a residual: identity layers inside it would"
                    f" double the stream (x + x); {self.name} deepens plain blocks, use"
                    " --family r2r for residual ones",
                    node.mark,
                )]  # fmt: skip
        problems: list[Problem] = []
        nonneg = self.plan.graph.input_nonneg.get(nodes[0].path, False)
        for layer in leaves(tuple(nodes)):
            kind, rule = layer.kind, _rule(layer)
            if rule.identity != "none":
                problem = self._identity_layer_problem(layer, rule, facts)
                if problem:
                    problems.append(Problem(f"{where}: {problem}", layer.mark))
                else:
                    facts.identity_layers[layer.path] = layer
            elif rule.idempotent:
                if not rule.is_identity and not nonneg:
                    problems.append(Problem(
                        f"{where}: {kind} '{layer.path}' is the identity only on a non-negative"
                        " input, and the tensor entering the block can be negative (it does not"
                        " come out of a relu)",
                        layer.mark,
                    ))  # fmt: skip
            else:
                problems.append(Problem(
                    f"{where}: '{layer.path}' is a {kind}; Net2DeeperNet needs every layer of a"
                    " new block to start as the identity, so its activations must be idempotent"
                    " (relu, on a non-negative input), and tanh, gelu and the like are not",
                    layer.mark,
                ))  # fmt: skip
        return problems

    def _identity_layer_problem(self, layer: Node, rule: KindRule, facts: Facts) -> str | None:
        if rule.identity != "matrix":
            return None
        spaces = {r.kind: s for r, s in self.plan.graph.roles(layer.key("weight"))}
        src, dst = spaces["consumer"], spaces["producer"]
        sizes = facts.sizes
        if sizes[dst.id] == 0:
            # Written only by new layers: an identity layer carries the teacher's width on.
            sizes[dst.id] = sizes[src.id]
        if sizes[dst.id] != sizes[src.id] or dst.size != src.size:
            return f"'{layer.path}' changes the width, so it cannot start as the identity"
        why = rule.identity_problem(layer.args)
        return f"{layer.kind} '{layer.path}' {why}" if why else None
