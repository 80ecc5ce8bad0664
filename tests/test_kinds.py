"""The growth registry (growth/kinds.py) and what the planner refuses from it (issue 7):
every kind of SPEC.md is known or refused, unknown kinds and unruled dimensions are
refused with the YAML place, layouts and ties the families cannot fill are refused, checking
has no side effects, and the package has no import cycle."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from growth_helpers import make_teacher, write_spec

import morphspec
from morphspec.convert import convert
from morphspec.errors import PlanRefused
from morphspec.growth.families import FAMILIES
from morphspec.growth.kinds import KINDS, KindRule, Layout, ParamRole, Tie
from morphspec.growth.plan import diff, plan_for
from morphspec.growth.rule import check_rule
from morphspec.kinds import all_kinds, registry

ROOT = Path(__file__).resolve().parents[1]
SPEC_MD = ROOT / "docs" / "spec.md"  # the repository's copy of the spec contract
RULES = {k.name for k in all_kinds() if k.shape is not None}  # kinds with a shape rule
CONTAINERS = {"sequential", "residual", "repeat"}
REVERSIBLE = {"hamiltonian", "midpoint", "leapfrog"}

HAMILTONIAN = """
morphspec: 1
name: {name}
vars: {{c: {c}, hidden: {hidden}}}
input: {{shape: [4, 6, 6]}}
body:
  - conv: {{name: stem, out: c, kernel: 3, padding: 1}}
  - hamiltonian: {{name: ham, steps: 1, hidden: hidden, kernel: 3}}
  - global_avgpool
  - linear: {{name: fc, out: 3}}
"""


def spec_kinds() -> set[str]:
    """The kinds of the table in docs/spec.md (the copy of SPEC.md)."""
    table = SPEC_MD.read_text(encoding="utf-8").split("| kind |", 1)[1].split("\n\n", 1)[0]
    found = set()
    for line in table.splitlines()[2:]:
        found |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return found


def test_every_kind_with_parameters_is_known_or_refused() -> None:
    known = set(KINDS)
    for kind in spec_kinds():
        if kind in known or kind not in RULES:
            continue  # a container, or a kind the shape rules do not build yet
        raise AssertionError(f"{kind}: add its entry to growth/kinds.py")
    assert known >= REVERSIBLE
    # every kind the shape rules build, and every registry kind, is one of SPEC.md's
    assert set(RULES) <= spec_kinds() | {"channel_pad"}
    assert set(KINDS) <= spec_kinds()


@pytest.mark.parametrize("kind", sorted(REVERSIBLE))
def test_a_kind_without_entry_is_refused_even_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    _patched(monkeypatch, kind, None)
    text = HAMILTONIAN.replace("hamiltonian", kind)
    spec = write_spec(tmp_path / "t.yaml", text.format(name="t", c=8, hidden=4))
    with pytest.raises(PlanRefused) as err:
        plan_for(spec, spec)
    message = str(err.value)
    line = next(i for i, t in enumerate(text.lstrip("\n").splitlines(), 1) if kind in t)
    assert f"{spec}:{line}:" in message, message
    assert f"'ham' is a {kind}" in message and "no growth rule" in message, message


def test_hamiltonian_hidden_growth_plans_a_widening(tmp_path: Path) -> None:
    """The issue's reproduction: hidden 4 -> 6 gave the empty plan "none"."""
    t = write_spec(tmp_path / "t.yaml", HAMILTONIAN.format(name="t", c=8, hidden=4))
    s = write_spec(tmp_path / "s.yaml", HAMILTONIAN.format(name="s", c=8, hidden=6))
    (widen,) = plan_for(t, s)[2].widens
    assert (widen.space, widen.old, widen.new) == ("ham.hidden", 4, 6)


def test_hamiltonian_channel_growth_refused_by_net2net_writes_nothing(tmp_path: Path) -> None:
    """Channels 8 -> 12 once padded k1.weight randomly under --no-verify; net2net, which
    cannot fill the tied K, refuses at plan time, so nothing is written."""
    t = write_spec(tmp_path / "t.yaml", HAMILTONIAN.format(name="t", c=8, hidden=4))
    s = write_spec(tmp_path / "s.yaml", HAMILTONIAN.format(name="s", c=12, hidden=4))
    teacher = make_teacher(t, out=tmp_path / "t.safetensors")
    with pytest.raises(PlanRefused, match=r"hamiltonian 'ham' reads as K and as Kᵀ \(tied\)"):
        convert(t, s, teacher, tmp_path / "out.safetensors", family="net2net", verify=False)
    assert not (tmp_path / "out.safetensors").exists()


MLP = """
morphspec: 1
name: {name}
vars: {{w: {w}}}
input: {{shape: [3]}}
body:
  - linear: {{name: fc1, out: w}}
  - relu
  - linear: {{name: fc2, out: 2}}
"""


def _specs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_spec(tmp_path / "t.yaml", MLP.format(name="t", w=4)),
        write_spec(tmp_path / "s.yaml", MLP.format(name="s", w=6)),
    )


def _patched(monkeypatch: pytest.MonkeyPatch, kind: str, rule: KindRule | None) -> None:
    """Kind `kind` with growth rule `rule` (None: unknown to growth) for this test only."""
    record = registry.get(kind)
    assert record is not None
    monkeypatch.setitem(registry._KINDS, kind, replace(record, growth=rule))


def test_a_dimension_without_a_role_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were linear's consumer role missing, fc2.weight's columns would change unruled."""
    linear = KINDS["linear"]
    roles = tuple(r for r in linear.roles if r.role != "consumer")
    _patched(monkeypatch, "linear", replace(linear, roles=roles))
    t, s = _specs(tmp_path)
    with pytest.raises(PlanRefused) as err:
        plan_for(t, s)
    message = str(err.value)
    assert "'fc2.weight': dimension 1 changes from 4 to 6, and no role of linear" in message
    assert f"{s}:8:" in message, message  # the line of fc2


def test_layouts_no_family_fills_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout("groups", groups="heads", per_group="head_dim")
    linear = KINDS["linear"]
    roles = tuple(replace(r, layout=layout) if r.role == "consumer" else r for r in linear.roles)
    _patched(monkeypatch, "linear", replace(linear, roles=roles))
    t, s = _specs(tmp_path)
    with pytest.raises(PlanRefused, match=f"laid out as {re.escape(layout.describe())}"):
        plan_for(t, s)


def test_ties_are_declared_and_filled_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reversible unit's K is read as K and Kᵀ: one dimension, two roles."""
    two_roles = (
        ParamRole("weight", 1, "consumer", "in"),
        ParamRole("weight", 1, "producer", "out"),
    )
    with pytest.raises(ValueError, match="no Tie"):
        check_rule(KindRule("k", "new", two_roles))
    tied = check_rule(
        KindRule("k", "new", two_roles, ties=(Tie("weight", 1, ("consumer", "producer"), True),))
    )
    assert tied.tie_of("weight", 1) is not None
    linear = KINDS["linear"]
    tie = Tie("weight", 1, ("consumer", "producer"), transposed=True)
    _patched(monkeypatch, "linear", replace(linear, ties=(tie,)))
    t, s = _specs(tmp_path)
    _, _, plan = plan_for(t, s)
    teacher = torch.ones(2, 4, dtype=torch.float64)
    for name in ("r2r", "netmorph"):  # one number serves both roles: zero
        got = FAMILIES[name](plan).tensor("fc2.weight", teacher, None, torch.float64)
        assert torch.equal(got[:, 4:], torch.zeros(2, 2, dtype=torch.float64)), name
    with pytest.raises(PlanRefused, match=r"linear 'fc2' reads as K and as Kᵀ \(tied\)"):
        FAMILIES["net2net"](plan)


def test_growable_args_come_from_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which args may grow is the kind's entry, not the argument's name."""
    assert KINDS["attention"].grows == frozenset({"heads", "kv_heads", "head_dim"})
    t, s = _specs(tmp_path)
    assert plan_for(t, s)[2].widens
    _patched(monkeypatch, "linear", replace(KINDS["linear"], grows=frozenset()))
    with pytest.raises(PlanRefused, match="'fc1': out changes from 4 to 6"):
        plan_for(t, s)


def test_checking_has_no_side_effects(tmp_path: Path) -> None:
    """Facts come out of a fresh check; checking again changes nothing a fill reads."""
    specs = ROOT / "examples" / "specs"
    _, _, plan = plan_for(specs / "resnet_cifar10.yaml", specs / "resnet_cifar18.yaml")
    sizes = dict(plan.teacher_size)
    family = FAMILIES["r2r"](plan)
    assert plan.teacher_size == sizes
    before = repr(family.facts)
    fresh = family.new_facts()
    assert family.check(fresh) == [] and repr(fresh) == before
    assert repr(family.facts) == before
    _, _, plan = plan_for(specs / "plain_cnn.yaml", specs / "plain_cnn.yaml", None, ["depth=4"])
    sizes = dict(plan.teacher_size)
    family = FAMILIES["net2net"](plan)
    assert plan.teacher_size == sizes and family.sizes != sizes  # identity layers carry widths
    assert repr(family.check(family.new_facts())) == "[]" and family.sizes != sizes


def test_plan_fields_are_family_free() -> None:
    specs = ROOT / "examples" / "specs"
    teacher = morphspec.resolve(morphspec.load_spec(specs / "mlp.yaml"))
    plan = diff(teacher, teacher)
    assert not plan.ops
    for name in vars(plan):
        assert not any(f in name for f in ("r2r", "net2net", "netmorph", "zero", "identity"))


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` imported at module level by `path` (TYPE_CHECKING included):
    function-level imports are lazy by intent and cannot form a load-time cycle."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith(package))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith(package):
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)

    visit(tree.body)
    return found


def test_the_package_has_no_import_cycle() -> None:
    pkg = ROOT / "morphspec"
    modules = {}
    for path in pkg.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {m: {i for i in _imports(p, "morphspec") if i in modules} for m, p in modules.items()}
    for m in graph:  # importing a.b.c runs a.b's __init__ first
        graph[m] |= {
            ".".join(i.split(".")[:k]) for i in graph[m] for k in range(2, i.count(".") + 1)
        }
        graph[m] = {i for i in graph[m] if i in modules and i != m}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1 and not m.startswith(n + "."):
                # a submodule importing its own package's __init__ is how packages load
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


PADDED = """
morphspec: 1
name: padded
vars: {w: 4}
input: {shape: [3, 8, 8]}
body:
  - conv: {name: stem, out: w, kernel: 3, padding: 1}
  - channel_pad: {name: pad, out: 8}
  - conv: {name: head, out: 2, kernel: 1}
"""


def test_channel_pad_grows_with_its_input_or_is_refused(tmp_path: Path) -> None:
    """The pad's zero channels follow its (grown) input; an output that does not grow as
    much as its input would drop teacher zero channels: refused with the pad's place."""
    spec = write_spec(tmp_path / "p.yaml", PADDED)
    teacher = make_teacher(spec, out=tmp_path / "t.safetensors")
    with pytest.raises(PlanRefused, match=r"channel_pad 'pad': its input grows from 4 to 6") as err:
        convert(spec, spec, teacher, tmp_path / "a.safetensors", student_set=["w=6"])
    assert f"{spec}:7:" in str(err.value)
    grown = PADDED.replace("out: 8", "out: 2*w")
    spec2 = write_spec(tmp_path / "q.yaml", grown)
    teacher = make_teacher(spec2, out=tmp_path / "t2.safetensors")
    result = convert(spec2, spec2, teacher, tmp_path / "b.safetensors", student_set=["w=6"])
    assert result.verification is not None and result.verification.passed
