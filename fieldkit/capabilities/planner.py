"""The capability plan: every memory term, the layout with the fewest GPUs of the asked kind, the alternatives,
the fewest of each other known GPU, and, when nothing fits, by how much the closest layout misses."""

from __future__ import annotations

from pydantic import BaseModel

from fieldkit.capabilities.architecture import ModelArch
from fieldkit.capabilities.catalog import GB, Catalogue, Hardware
from fieldkit.capabilities.errors import PlanInputError
from fieldkit.capabilities.layouts import Fit, LayoutSearch, preference
from fieldkit.capabilities.memory import engine_terms, learner_terms
from fieldkit.capabilities.request import PlanRequest

FRACTION_STEP = 0.05  # suggested GPU fractions are rounded up to this


class TermRow(BaseModel):
    name: str
    kind: str
    total_gb: float  # whole model, one replica
    formula: str


class LayoutRow(BaseModel):
    label: str
    family: str
    tp: int
    pp: int
    dp: int
    zero: int
    engine: str
    engine_tp: int
    gpus: int
    learner_gpus: int
    engine_gpus: int
    peak_gb: float  # the busiest GPU at its peak
    required_gb: float  # with headroom
    capacity_gb: float
    fits: bool
    miss_gb: float
    engine_gpu_gb: float
    per_gpu_gb: dict[str, float]
    phases_gb: dict[str, float]

    @classmethod
    def of(cls, fit: Fit) -> LayoutRow:
        layout = fit.layout
        return cls(
            label=layout.label,
            family=layout.family,
            tp=layout.tp,
            pp=layout.pp,
            dp=layout.dp,
            zero=layout.zero,
            engine=layout.engine,
            engine_tp=layout.engine_tp,
            gpus=layout.gpus,
            learner_gpus=layout.learner_gpus,
            engine_gpus=layout.engine_gpus,
            peak_gb=fit.peak_bytes / GB,
            required_gb=fit.required_bytes / GB,
            capacity_gb=fit.capacity_bytes / GB,
            fits=fit.fits,
            miss_gb=fit.miss_bytes / GB,
            engine_gpu_gb=fit.engine_gpu_bytes / GB,
            per_gpu_gb={name: value / GB for name, value in fit.per_gpu.items()},
            phases_gb={name: value / GB for name, value in fit.phases.items()},
        )


class CoResidence(BaseModel):
    """Learner and engine on one device: what each needs, and the RunConfig fractions that hold them."""

    learner_gb: float
    engine_gb: float
    total_gb: float
    required_gb: float
    capacity_gb: float
    fits: bool
    engine_gpu_fraction: float
    learner_gpu_fraction: float


class Plan(BaseModel):
    model: str
    params: int
    published_params: int | None
    lora_params: int | None
    gpu: str
    gpu_label: str
    unified_memory: bool
    request: dict[str, object]
    terms: list[TermRow]
    learner_total_gb: float
    engine_total_gb: float
    best: LayoutRow | None
    closest: LayoutRow | None  # when nothing fits: the layout that misses by least
    alternatives: list[LayoutRow]
    other_gpus: dict[str, int | None]  # fewest GPUs of each other known kind (None: none up to max_gpus)
    co_residence: CoResidence | None
    notes: list[str]

    @property
    def summary(self) -> str:
        if self.best:
            best = self.best
            return (
                f"{best.gpus} x {self.gpu} ({best.label}): {best.peak_gb:.1f} GB on the busiest GPU, "
                f"{best.required_gb:.1f} GB with {self.request['headroom']:.0%} headroom, of {best.capacity_gb:g} GB"
            )
        assert self.closest is not None
        close = self.closest
        return (
            f"no layout of up to {self.request['max_gpus']} x {self.gpu} fits: the closest, {close.label} on "
            f"{close.gpus} GPUs, needs {close.required_gb:.1f} GB per GPU with {self.request['headroom']:.0%} "
            f"headroom, {close.miss_gb:.1f} GB more than the {close.capacity_gb:g} GB it has"
        )


def best_fit(arch: ModelArch, hw: Hardware, req: PlanRequest) -> tuple[Fit | None, Fit, list[Fit]]:
    """(the preferred fitting layout or None, the closest layout, the best fitting layout of each family)."""
    search = LayoutSearch(arch, hw, req, learner_terms(arch, req), engine_terms(arch, req))
    fitting: dict[tuple[str, str], Fit] = {}
    closest: Fit | None = None
    for fit in search.candidates():
        if fit.fits:
            key = (fit.layout.family, fit.layout.engine)
            if key not in fitting or preference(fit) < preference(fitting[key]):
                fitting[key] = fit
        elif closest is None or (fit.miss_bytes, fit.layout.gpus) < (closest.miss_bytes, closest.layout.gpus):
            closest = fit
    ranked = sorted(fitting.values(), key=preference)
    best = ranked[0] if ranked else None
    if best is None and closest is None:  # only a separate engine was allowed, and it alone takes every GPU
        raise PlanInputError("max_gpus", f"{req.max_gpus} GPU(s) leave none for the learner beside a separate engine")
    return best, best or closest, ranked  # type: ignore[return-value]


def make_plan(catalogue: Catalogue, model: str, gpu: str, req: PlanRequest) -> Plan:
    arch = catalogue.model(model)
    hw = catalogue.gpu(gpu)
    req = req.resolved()
    if req.uses_lora and req.rank > arch.hidden:
        raise PlanInputError(
            "rank", f"{req.rank} is above {arch.name}'s hidden size {arch.hidden}; a LoRA update cannot have that rank"
        )
    learner = learner_terms(arch, req)
    engine = engine_terms(arch, req)
    best, closest, ranked = best_fit(arch, hw, req)
    others: dict[str, int | None] = {}
    for name, other in catalogue.hardware.items():
        if name != hw.name:
            found, _, _ = best_fit(arch, other, req)
            others[name] = found.layout.gpus if found else None
    alternatives = [LayoutRow.of(fit) for fit in ranked[1:]]
    notes = [arch.notes] if arch.notes else []
    if req.optimizer == "paged_adamw8bit":
        notes.append("paged 8-bit AdamW can page its states to host memory under pressure; they are counted on GPU")
    if hw.unified_memory:
        notes.append(f"{hw.label}: unified memory, also shared with the OS, Ray, rollout workers and sandboxes")
    return Plan(
        model=arch.name,
        params=arch.param_counts().total,
        published_params=arch.params,
        lora_params=arch.lora_params(req.rank, req.target_modules) if req.uses_lora else None,
        gpu=hw.name,
        gpu_label=hw.label,
        unified_memory=hw.unified_memory,
        request=req.model_dump(),
        terms=[TermRow(name=t.name, kind=t.kind, total_gb=t.bytes / GB, formula=t.formula) for t in learner + engine],
        learner_total_gb=sum(t.bytes for t in learner) / GB,
        engine_total_gb=sum(t.bytes for t in engine) / GB,
        best=LayoutRow.of(best) if best else None,
        closest=None if best else LayoutRow.of(closest),
        alternatives=alternatives,
        other_gpus=others,
        co_residence=co_residence(best or closest, req) if engine else None,
        notes=notes,
    )


def co_residence(fit: Fit, req: PlanRequest) -> CoResidence | None:
    """For a colocated layout: the busiest GPU's learner and engine shares and the fractions that hold them."""
    if fit.layout.engine != "colocated":
        return None
    engine = fit.engine_share_bytes
    learner = fit.peak_bytes - engine
    scale = (1 + req.headroom) / fit.capacity_bytes

    def fraction(need: float) -> float:
        steps = need * scale / FRACTION_STEP
        return round(min(1.0, -(-round(steps, 6) // 1) * FRACTION_STEP), 2)

    return CoResidence(
        learner_gb=learner / GB,
        engine_gb=engine / GB,
        total_gb=fit.peak_bytes / GB,
        required_gb=fit.required_bytes / GB,
        capacity_gb=fit.capacity_bytes / GB,
        fits=fit.fits,
        engine_gpu_fraction=fraction(engine),
        learner_gpu_fraction=fraction(learner),
    )
