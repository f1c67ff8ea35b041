"""Multi-GPU layouts: data parallel with ZeRO-0..3 (ZeRO-3 = FSDP full shard), tensor and pipeline parallel, and
where the rollout engine sits; the search for the fewest GPUs of one kind that fit with headroom.

Per GPU, a term is divided by the model-parallel degree it is split over (TP always; PP for weights-like terms, by
stage, the largest stage counted) and by DP where ZeRO shards it: ZeRO-1 the optimizer states (4P + 12P/N for
mixed-precision AdamW), ZeRO-2 the gradients too (2P + 14P/N), ZeRO-3 the weights as well (16P/N). Activations
divide by TP (sequence parallelism on) and not by PP (1F1B keeps L layers' worth on the first stage). DeepSpeed
cannot combine ZeRO-2/3 with pipeline parallelism, so PP pairs only with ZeRO-0/1. The minimal DP degree of a
(TP, PP, ZeRO) triple is solved in closed form, so the whole space is searched exactly in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from fieldkit.capabilities.architecture import ModelArch
from fieldkit.capabilities.catalog import Hardware
from fieldkit.capabilities.memory import KV_CACHE, Term
from fieldkit.capabilities.request import PlanRequest

EnginePlacement = Literal["none", "colocated", "separate"]
ZERO_LABEL = {0: "", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3/FSDP"}


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    dp: int
    zero: int
    engine: EnginePlacement = "none"
    engine_tp: int = 0  # GPUs one engine replica spans

    @property
    def learner_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def engine_gpus(self) -> int:
        return self.engine_tp if self.engine == "separate" else 0

    @property
    def gpus(self) -> int:
        return self.learner_gpus + self.engine_gpus

    @property
    def family(self) -> str:
        """Which kinds of parallelism the learner uses: 'TP + PP + DP', 'DP', ... or 'one GPU'."""
        parts = [name for name, degree in (("TP", self.tp), ("PP", self.pp), ("DP", self.dp)) if degree > 1]
        return " + ".join(parts) or "one GPU"

    @property
    def label(self) -> str:
        text = f"TP{self.tp} x PP{self.pp} x DP{self.dp}"
        if self.zero and self.dp > 1:
            text += f" {ZERO_LABEL[self.zero]}"
        if self.engine == "separate":
            text += f" + engine on {self.engine_tp} GPU{'s' if self.engine_tp > 1 else ''}"
        elif self.engine == "colocated":
            text += f" + engine (TP{self.engine_tp}) on the same GPUs"
        return text


@dataclass
class Fit:
    """A layout evaluated on one GPU kind: bytes per term on its busiest learner GPU, and the verdict."""

    layout: Layout
    per_gpu: dict[str, float]
    peak_bytes: float  # what the busiest GPU holds at its peak
    capacity_bytes: float
    headroom: float
    engine_gpu_bytes: float = 0.0  # peak of a dedicated engine GPU (separate placement)
    engine_share_bytes: float = 0.0  # the engine's part of `peak_bytes` (colocated placement)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def required_bytes(self) -> float:
        return max(self.peak_bytes, self.engine_gpu_bytes) * (1 + self.headroom)

    @property
    def fits(self) -> bool:
        return self.required_bytes <= self.capacity_bytes

    @property
    def miss_bytes(self) -> float:
        return max(0.0, self.required_bytes - self.capacity_bytes)


def tp_options(arch: ModelArch, hw: Hardware) -> list[int]:
    """Powers of two within one node that divide the attention heads."""
    options, tp = [], 1
    while tp <= hw.gpus_per_node:
        if arch.heads % tp == 0:
            options.append(tp)
        tp *= 2
    return options


def pipeline_options(layers: int, most: int) -> list[int]:
    """Stage counts worth trying: only the smallest pp of each stage size ceil(L/pp); more stages of the same size
    hold the same per-GPU memory on more GPUs."""
    options = [pp for pp in range(1, min(layers, most) + 1) if pp == 1 or -(-layers // pp) < -(-layers // (pp - 1))]
    return options


def term_share(term: Term, arch: ModelArch, tp: int, pp: int) -> float:
    """Whole-model bytes of `term` on one GPU of the largest pipeline stage, before ZeRO."""
    if not term.pipeline_split or pp == 1:
        return term.bytes / tp
    stage_layers = math.ceil(arch.layers / pp) / arch.layers
    # Each end stage holds one of embedding / LM head (a tied model keeps a copy on both); count the larger.
    return (term.layers_bytes * stage_layers + term.edge_bytes / (1 if arch.tied_embeddings else 2)) / tp


def engine_share(terms: list[Term], arch: ModelArch, engine_tp: int) -> float:
    kv_split = min(engine_tp, arch.kv_heads)  # beyond kv_heads, heads are replicated across TP ranks
    return sum(t.bytes / (kv_split if t.name == KV_CACHE else engine_tp) for t in terms)


class LayoutSearch:
    """Exhaustive search over (engine TP, TP, PP, ZeRO) with the minimal DP solved in closed form."""

    def __init__(
        self, arch: ModelArch, hw: Hardware, req: PlanRequest, learner: list[Term], engine: list[Term]
    ) -> None:
        self.arch, self.hw, self.req = arch, hw, req
        self.learner, self.engine = learner, engine
        self.capacity = hw.memory_bytes
        self.usable = self.capacity / (1 + req.headroom)
        self.overhead = req.overhead_gb * 1e9

    def evaluate(self, layout: Layout) -> Fit:
        """Bytes per term on the busiest GPU of `layout`, and its peak under the request's gradient model."""
        per_gpu: dict[str, float] = {}
        sums = {"weights": 0.0, "grads": 0.0, "optimizer": 0.0, "activations": 0.0, "transient": 0.0}
        for term in self.learner:
            value = term_share(term, self.arch, layout.tp, layout.pp) / self._dp_divisor(term.kind, layout)
            per_gpu[term.name] = value
            sums[term.kind] += value
        per_gpu["framework overhead"] = self.overhead
        engine_here = 0.0
        if layout.engine == "colocated":
            for term in self.engine:
                per_gpu[term.name] = engine_share([term], self.arch, layout.engine_tp)
            engine_here = engine_share(self.engine, self.arch, layout.engine_tp) + self.overhead
            per_gpu["engine framework overhead"] = self.overhead
        forward = sums["activations"] + sums["transient"]
        persistent = sums["weights"] + sums["optimizer"]
        engine_gpu = 0.0
        if layout.engine == "separate":
            engine_gpu = engine_share(self.engine, self.arch, layout.engine_tp) + self.overhead
        base = self.overhead + engine_here
        if self.req.grads == "persistent":
            phases = {"step": base + persistent + sums["grads"] + forward}
        else:  # gradients appear as backward frees activations: the two peaks do not coincide
            phases = {
                "forward/backward": base + persistent + forward,
                "end of backward": base + persistent + sums["grads"],
            }
        peak = max(phases.values())
        return Fit(layout, per_gpu, peak, self.capacity, self.req.headroom, engine_gpu, engine_here, phases)

    def _dp_divisor(self, kind: str, layout: Layout) -> int:
        sharded = {"optimizer": 1, "grads": 2, "weights": 3}.get(kind)
        return layout.dp if sharded is not None and layout.zero >= sharded else 1

    def placements(self) -> Iterator[tuple[EnginePlacement, int]]:
        if not self.engine:
            yield "none", 0
            return
        options = tp_options(self.arch, self.hw)
        if self.req.engine in ("auto", "colocated"):
            for engine_tp in options:
                yield "colocated", engine_tp
        if self.req.engine in ("auto", "separate"):
            # The smallest engine group that fits on its own GPUs; if none does, the largest, so that the
            # search still reports how far the closest layout misses.
            fitting = [
                tp
                for tp in options
                if self.evaluate(Layout(1, 1, 1, 0, "separate", tp)).engine_gpu_bytes <= self.usable
            ]
            yield "separate", fitting[0] if fitting else options[-1]

    def candidates(self) -> Iterator[Fit]:
        """For every (placement, TP, PP, ZeRO): the layout with the fewest GPUs that fits, or, when none can, the
        one with the most DP ranks allowed (so the caller can say how close it came)."""
        for placement, engine_tp in self.placements():
            budget = self.req.max_gpus - (engine_tp if placement == "separate" else 0)
            if budget < 1:
                continue
            for tp in tp_options(self.arch, self.hw):
                for pp in pipeline_options(self.arch.layers, budget // tp):
                    max_dp = budget // (tp * pp)
                    for zero in (0, 1, 2, 3) if pp == 1 else (0, 1):
                        yield self._smallest_dp(Layout(tp, pp, 1, zero, placement, engine_tp), max_dp)

    def _smallest_dp(self, base: Layout, max_dp: int) -> Fit:
        step = 1
        if base.engine == "colocated":  # engine replicas tile the learner's GPUs: N must be a multiple of engine TP
            step = base.engine_tp // math.gcd(base.engine_tp, base.tp * base.pp)
        first = self.evaluate(_with_dp(base, step))
        if first.fits or base.zero == 0 or max_dp < 2 * step:
            return first
        # Each phase's peak is a + b/dp (b: the ZeRO-sharded bytes); two evaluations give a and b exactly.
        second = self.evaluate(_with_dp(base, 2 * step))
        needed = step
        for name, p1 in first.phases.items():
            b = (p1 - second.phases[name]) * 2 * step
            a = p1 - b / step
            if a >= self.usable:
                return self.evaluate(_with_dp(base, max_dp // step * step))  # no DP degree fits: the closest
            needed = max(needed, math.ceil(b / (self.usable - a) / step - 1e-9) * step)
        if needed > max_dp:
            return self.evaluate(_with_dp(base, max_dp // step * step))
        return self.evaluate(_with_dp(base, needed))


def _with_dp(layout: Layout, dp: int) -> Layout:
    return Layout(layout.tp, layout.pp, dp, layout.zero, layout.engine, layout.engine_tp)


def preference(fit: Fit) -> tuple[int, int, int, int, int]:
    """Fewest GPUs; then fewer pipeline stages (bubbles), smaller TP groups, lower ZeRO stage (less traffic)."""
    layout = fit.layout
    return (layout.gpus, layout.pp, layout.tp, layout.zero if layout.dp > 1 else 0, layout.engine == "separate")
