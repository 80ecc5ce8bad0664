"""One training run of the payoff benchmark: an arm (scratch or grown) at one learning
rate, growth point and seed, on a task (payoff_gpt.py, payoff_cnn.py).

Every run of a seed sees the same batches in the same order (batch i is the seed's i-th
draw) and spends the same training FLOPs, the budget: 3 x the arch's forward FLOPs per
sample x samples seen, the teacher phase included, evaluation excluded. The learning rate
is a function of the FLOPs spent (linear warmup over `warmup` of the budget, then cosine to
10% at the budget), so scratch and grown runs follow one schedule. A grown arm trains the
teacher until `grow_frac` of the budget is spent, grows it with `morphspec.grow` (Adam's
state mapped onto the student) and trains the student on to the budget. `rewarm` arms
multiply the schedule after the growth by a linear ramp over `rewarm` of the budget (the
practitioners' re-warmup at a growth).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

import morphspec
from morphspec.arch import Arch

__all__ = ["ARMS", "Arm", "Task", "run_arm"]


@dataclass(frozen=True)
class Arm:
    """What a run does: train S or T alone, or T grown into S by `family` with `options`."""

    name: str
    kind: str  # "big", "small" or "grown"
    family: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    rewarm: float = 0.0
    remedy: str = ""  # what the arm changes against its family's plain arm, for the docs


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("scratch-big", "big"),
        Arm("scratch-small", "small"),
        Arm("grown-stack", "grown", "stack"),
        Arm("grown-r2r", "grown", "r2r"),
        Arm("grown-netmorph", "grown", "netmorph"),
        Arm("grown-net2net", "grown", "net2net"),
        Arm(
            "grown-netmorph-copy",
            "grown",
            "netmorph",
            (("new_blocks", "copy"), ("interleave", True)),
            remedy="new blocks copy the teacher's last block, out-projections zero, interleaved"
            " (LLaMA-Pro): trained weights, still exact",
        ),
        Arm(
            "grown-r2r-rewarm",
            "grown",
            "r2r",
            rewarm=0.03,
            remedy="learning rate re-warmed over 3% of the budget after the growth",
        ),
        Arm(
            "grown-r2r-scale3",
            "grown",
            "r2r",
            (("init_scale", 3.0),),
            remedy="R2R's free half (U, c, Z) drawn at 3x the matched scale",
        ),
    )
}


class Task(Protocol):
    """A model pair, its data and its loss (see payoff_gpt.py)."""

    teacher: Arch
    student: Arch
    budget: float
    evals: int

    def flops_per_step(self, arch: Arch) -> float: ...
    def sampler(self, seed: int) -> Any: ...
    def batch(self, sampler: Any) -> tuple[Tensor, Tensor]: ...
    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor: ...
    def evaluate(self, model: nn.Module) -> float: ...


@dataclass
class Schedule:
    lr: float
    budget: float
    warmup: float
    rewarm: float = 0.0
    grown_at: float | None = None

    def __call__(self, spent: float) -> float:
        f = spent / self.budget
        if f < self.warmup:
            base = self.lr * (f / self.warmup + 1e-3)
        else:
            t = min(1.0, (f - self.warmup) / (1 - self.warmup))
            base = self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
        if self.rewarm and self.grown_at is not None:
            ramp = (spent - self.grown_at) / (self.rewarm * self.budget)
            base *= min(1.0, max(ramp, 0.0) + 1e-3)
        return base


@dataclass
class Run:
    curve: list[list[float]] = field(default_factory=lambda: [])
    spent: float = 0.0
    steps: int = 0
    next_eval: float = 0.0


def _train(task: Task, model: nn.Module, arch: Arch, opt: torch.optim.Optimizer,
           sched: Schedule, sampler: Any, run: Run, stop: float) -> None:  # fmt: skip
    """Train until the next step would pass `stop` FLOPs; evaluate on the FLOPs grid."""
    fps = task.flops_per_step(arch)
    every = task.budget / task.evals
    model.train()
    while run.spent + fps <= stop * (1 + 1e-9):
        for group in opt.param_groups:
            group["lr"] = sched(run.spent)
        x, y = task.batch(sampler)
        loss = task.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.spent += fps
        run.steps += 1
        if run.spent >= run.next_eval:
            run.curve.append([run.spent, task.evaluate(model)])
            run.next_eval = (math.floor(run.spent / every) + 1) * every


def run_arm(task: Task, arm: Arm, lr: float, grow_frac: float, seed: int,
            warmup: float = 0.05) -> dict[str, Any]:  # fmt: skip
    """One run; its curve is a list of [FLOPs, val loss], the last at the end of training."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    torch.manual_seed(seed)
    sampler = task.sampler(seed)
    sched = Schedule(lr, task.budget, warmup, arm.rewarm)
    run = Run()
    info: dict[str, Any] = {"arm": arm.name, "lr": lr, "seed": seed}
    arch = task.student if arm.kind == "big" else task.teacher
    model = morphspec.build(arch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    run.curve.append([0.0, task.evaluate(model)])
    run.next_eval = task.budget / task.evals
    if arm.kind == "grown":
        assert arm.family is not None
        _train(task, model, arch, opt, sched, sampler, run, grow_frac * task.budget)
        before = task.evaluate(model)
        grown = morphspec.grow(model, task.teacher, task.student, optimizer=opt,
                               family=arm.family, seed=seed, **dict(arm.options))  # fmt: skip
        assert grown.optimizer is not None
        model, opt, arch = grown.student, grown.optimizer, task.student
        after = task.evaluate(model)
        ver = grown.verification
        info["growth"] = {
            "frac": grow_frac, "step": run.steps, "flops": run.spent,
            "val_before": before, "val_after": after,
            "rel_err": None if ver is None else ver.rel_err,
        }  # fmt: skip
        info["growth_step"] = run.steps
        run.curve.append([run.spent, after])
        sched.grown_at = run.spent
    _train(task, model, arch, opt, sched, sampler, run, task.budget)
    if run.curve[-1][0] != run.spent:
        run.curve.append([run.spent, task.evaluate(model)])
    info["curve"] = run.curve
    info["final_loss"] = run.curve[-1][1]
    info["steps"] = run.steps
    info["seconds"] = time.perf_counter() - start
    return info


def same_students(task: Task, arms: list[Arm], seed: int = 0) -> dict[str, str]:
    """Arms whose growth makes the same student and optimizer state as an earlier arm's,
    bit for bit (depth-only growth of residual blocks: net2net borrows netmorph's zero last
    layer), mapped to that arm: their runs would repeat its runs exactly. Checked on a
    teacher with random weights after two Adam steps, so that every tensor and moment is
    generic."""
    torch.manual_seed(seed)
    teacher = morphspec.build(task.teacher)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(0, 0.5)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    sampler = task.sampler(seed)
    for _ in range(2):
        x, y = task.batch(sampler)
        opt.zero_grad()
        task.loss(teacher, x, y).backward()
        opt.step()
    seen: list[tuple[Arm, dict[str, Tensor]]] = []
    alias: dict[str, str] = {}
    for arm in arms:
        if arm.kind != "grown":
            continue
        assert arm.family is not None
        grown = morphspec.grow(teacher, task.teacher, task.student, optimizer=opt,
                               family=arm.family, seed=seed, verify=False,
                               **dict(arm.options))  # fmt: skip
        assert grown.optimizer is not None
        state = dict(grown.student.state_dict())
        for i, p in enumerate(grown.student.parameters()):
            for k, v in grown.optimizer.state[p].items():
                state[f"opt.{i}.{k}"] = v
        for other, other_state in seen:
            if other.rewarm == arm.rewarm and state.keys() == other_state.keys() and all(
                torch.equal(v, other_state[k]) for k, v in state.items()
            ):  # fmt: skip
                alias[arm.name] = other.name
                break
        else:
            seen.append((arm, state))
    return alias
