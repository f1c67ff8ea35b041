"""The deterministic corpus generator: personas x templates x seed -> tasks, identical bytes for the same seed.

Task i of a persona uses recipe i mod len(RECIPES) (so each persona gets the same easy/medium/hard mix: the easy
one- and two-command tasks are the majority, which is what a small model can learn from) on a workspace built from
an RNG seeded by (seed, role, i). Python's `random.Random` seeded with a string is stable across runs and
platforms, which is what makes the output byte-identical.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fieldkit.gym.personas import PersonaSpec, personas
from fieldkit.gym.task import Persona, Task, difficulty_for_steps
from fieldkit.gym.templates import TEMPLATES
from fieldkit.gym.templates.families import MAX_ASSERTIONS

DEFAULT_PER_PERSONA = 25
MAX_ATTEMPTS = 50  # re-rolls of one task slot whose intent repeats an earlier task of the persona


class GenerationError(RuntimeError):
    """A template produced something that is not a valid task: a bug in the template, not bad luck."""


def generate_persona(spec: PersonaSpec, count: int, seed: int) -> list[Task]:
    template = TEMPLATES[spec.role]
    tasks: list[Task] = []
    seen: set[str] = set()
    for i in range(count):
        recipe = template.RECIPES[i % len(template.RECIPES)]
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(f"clawgym/{seed}/{spec.role}/{i}/{attempt}")
            world = template.build(rng)
            try:
                draft = recipe(world, rng)
            except (ValueError, StopIteration) as exc:
                raise GenerationError(f"{spec.role} recipe {recipe.__name__} (task {i}): {exc!r}") from exc
            if draft.intent not in seen:
                break
        else:
            raise GenerationError(f"{spec.role} recipe {recipe.__name__}: no new intent in {MAX_ATTEMPTS} tries")
        seen.add(draft.intent)
        if not 2 <= len(draft.assertions) <= MAX_ASSERTIONS:
            raise GenerationError(f"{spec.role} {recipe.__name__}: {len(draft.assertions)} assertions")
        tasks.append(
            Task(
                task_id=f"{spec.role}-{i:03d}",
                persona=Persona(role=spec.role, context=spec.context),
                intent=draft.intent,
                workspace_seed=world.ws.seed(),
                skills_required=draft.skills,
                verifiable_assertions=draft.assertions,
                difficulty=difficulty_for_steps(len(draft.commands)),
                estimated_steps=len(draft.commands),
                reference_solution=draft.commands,
            )
        )
    return tasks


def generate_tasks(
    per_persona: int = DEFAULT_PER_PERSONA, seed: int = 0, roles: Sequence[str] | None = None
) -> list[Task]:
    """`per_persona` tasks for each persona (all eight unless `roles` names some), in persona order."""
    if per_persona < 1:
        raise ValueError(f"per_persona must be >= 1, got {per_persona}")
    specs = [p for p in personas() if roles is None or p.role in roles]
    unknown = set(roles or ()) - {p.role for p in specs}
    if unknown:
        raise ValueError(f"unknown personas {sorted(unknown)}; known: {', '.join(p.role for p in personas())}")
    return [task for spec in specs for task in generate_persona(spec, per_persona, seed)]
