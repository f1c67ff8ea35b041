"""RolloutWorker: runs ClawGym episodes, policy <-> sandbox, many at once.

One episode: lease a sandbox seeded with the task's workspace, then turn by turn generate -> parse the action ->
exec -> format the observation, appending token ids (earlier turns are never re-tokenised), until the agent says it
is done, the turn limit, three parse errors in a row, or a full context; snapshot the workspace, release the
sandbox, and have the grader grade it. With T2PO's turn-level dynamical sampling a turn whose entropy barely moved
is regenerated; with A2TGPO each turn that the episode goes on after gets its raw information gain. A sandbox that
dies under the episode (killed from outside, its daemon gone) costs a fresh start of the episode in a new sandbox,
with the same seed; a fault that persists, or one of the engine, ends only that episode: it comes back with
stop_reason "failed" and the reason. A worker that dies is restarted by Ray, gives back the sandboxes it held and
reruns the episodes it was given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import ray

from fieldkit.chat_tokens import ChatDeltaBuilder, render
from fieldkit.config import RunConfig
from fieldkit.generation import GenerateRequest, GenerateResult, PolicyError
from fieldkit.gym.protocol import format_observation, format_parse_error, initial_messages, parse_action
from fieldkit.gym.records import Episode, ExecResult, StopReason, Turn, WorkspaceSnapshot
from fieldkit.gym.task import Task
from fieldkit.rl.a2tgpo import information_gain
from fieldkit.rl.tds import should_regenerate, turn_entropy
from fieldkit.storage import fetch_dir
from services.logs import capture_actor_output

MAX_CONSECUTIVE_PARSE_ERRORS = 3  # a policy that misses the protocol three times running will not recover
SANDBOX_ATTEMPTS = 2  # a sandbox dying under an episode is an accident; twice in a row is a fault to report


@dataclass(frozen=True)
class EpisodeSpec:
    """What the driver asks for: one rollout of one task."""

    task: Task
    episode_id: str
    group_id: str
    adapter: str | None  # None = the base model
    temperature: float
    seed: int


class SandboxFault(RuntimeError):
    """The sandbox itself failed under a command (not the command's own failure)."""


class SandboxSession(Protocol):
    async def exec(self, command: str, timeout: float) -> ExecResult: ...
    async def snapshot(self) -> WorkspaceSnapshot: ...


Generate = Callable[[GenerateRequest], Awaitable[GenerateResult]]
Score = Callable[[list[int], list[int], str | None], Awaitable[list[float]]]
Progress = Callable[[Task, WorkspaceSnapshot], Awaitable[float]]


class EpisodeRunner:
    """The turn loop over plain callables, shared by the actors, the evaluation gate and the sequential baseline."""

    def __init__(self, cfg: RunConfig, tokenizer: Any, generate: Generate, score: Score, progress: Progress) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.deltas = ChatDeltaBuilder(tokenizer)
        self.generate = generate
        self.score = score
        self.progress = progress
        self.max_tokens = cfg.turn_token_limit
        self.info_gain = cfg.algorithm.advantage == "a2tgpo"

    async def run(self, spec: EpisodeSpec, sandbox: SandboxSession) -> tuple[Episode, WorkspaceSnapshot]:
        started = time.perf_counter()
        messages: list[dict[str, str]] = initial_messages(spec.task)
        context = render(self.tokenizer, messages, add_generation_prompt=True)
        reply_end = 0  # where the last reply ended in `context`: what follows is the next turn's prompt
        turns: list[Turn] = []
        executed_ok = 0  # commands that exited 0: how far along the reference solution the oracle gain assumes
        gain_state = await self._gain_state(spec, sandbox, context, executed_ok) if self.info_gain else None
        entropy: float | None = None
        parse_errors = 0
        stop: StopReason = "max_turns"
        version = -1
        for index in range(self.cfg.rollout.max_turns):
            try:
                result, entropy, regenerations = await self._sample_turn(spec, context, index, entropy)
            except PolicyError:  # no room in the context for another reply
                stop = "agent_error"
                break
            version = result.adapter_version
            action = parse_action(result.text)
            turn = Turn(
                index=index,
                prompt_token_ids=context[reply_end:],
                response_token_ids=result.token_ids,
                response_logprobs=result.logprobs,
                response_text=result.text,
                action=action,
                entropy=entropy,
                regenerations=regenerations,
                policy_version=result.adapter_version,
                temperature=spec.temperature,
                top_p=self.cfg.rollout.top_p,
            )
            turns.append(turn)
            context = [*context, *result.token_ids]
            reply_end = len(context)
            if action.kind == "done":
                stop = "task_complete"
                break
            if action.kind == "command":
                turn.exec_result = await sandbox.exec(action.command or "", self.cfg.rollout.command_timeout_s)
                if turn.exec_result.error is not None:
                    raise SandboxFault(turn.exec_result.error)
                executed_ok += turn.exec_result.exit_code == 0
                observation = format_observation(turn.exec_result)
                parse_errors = 0
            else:
                observation = format_parse_error(action)
                parse_errors += 1
                if parse_errors >= MAX_CONSECUTIVE_PARSE_ERRORS:
                    stop = "parse_error"
                    break
            if index + 1 == self.cfg.rollout.max_turns:
                break
            messages.append({"role": "assistant", "content": result.text})
            observation_message = {"role": "user", "content": observation}
            context = [*context, *self.deltas.append(context, messages, [observation_message]).token_ids]
            messages.append(observation_message)
            if gain_state is not None:
                after = await self._gain_state(spec, sandbox, context, executed_ok)
                turn.info_gain = information_gain([gain_state, after], self._gain_form)[0]
                gain_state = after
        snapshot = await sandbox.snapshot()
        episode = Episode(
            episode_id=spec.episode_id,
            task_id=spec.task.task_id,
            group_id=spec.group_id,
            policy_version=version,
            turns=turns,
            stop_reason=stop,
            wall_s=time.perf_counter() - started,
        )
        return episode, snapshot

    async def _sample_turn(
        self, spec: EpisodeSpec, context: list[int], index: int, previous_entropy: float | None
    ) -> tuple[GenerateResult, float | None, int]:
        """One reply; with TDS, regenerated while its entropy barely moved from the previous turn's."""
        algo = self.cfg.algorithm
        tries = 0
        while True:
            request = GenerateRequest(
                prompt_token_ids=context,
                max_tokens=self.max_tokens,
                temperature=spec.temperature,
                top_p=self.cfg.rollout.top_p,
                seed=(spec.seed * 1009 + index) * 7 + tries,  # distinct per episode, turn and retry; reproducible
                adapter=spec.adapter,
                top_logprobs=algo.tds_top_logprobs if algo.turn_dynamic_sampling else 0,
            )
            result = await self.generate(request)
            if result.top_logprobs is None:
                return result, None, tries
            entropy = turn_entropy([list(row.values()) for row in result.top_logprobs])
            retry = should_regenerate(
                entropy, previous_entropy, eta=algo.tds_eta, tries_so_far=tries, max_tries=algo.tds_max_regenerations
            )
            if not retry:
                return result, entropy, tries
            tries += 1

    @property
    def _gain_form(self) -> str:
        return self.cfg.algorithm.info_gain_form if self.cfg.algorithm.info_gain_source == "oracle" else "logprob"

    async def _gain_state(self, spec: EpisodeSpec, sandbox: SandboxSession, context: list[int], done: int) -> float:
        """A2TGPO's per-turn state: the policy's mean log-prob of the rest of the reference solution after
        `context` (oracle), or the share of assertions the workspace passes now (progress)."""
        if self.cfg.algorithm.info_gain_source == "progress":
            return await self.progress(spec.task, await sandbox.snapshot())
        remaining = spec.task.reference_solution[done:]
        gold = "\n".join(f"```bash\n{command}\n```" for command in remaining) or "TASK_COMPLETE"
        gold_ids = self.tokenizer(gold, add_special_tokens=False)["input_ids"]
        logprobs = await self.score(context, gold_ids, spec.adapter)
        return sum(logprobs) / len(logprobs)


class PoolSession:
    """A leased sandbox of the SandboxPool actor, seen as a SandboxSession."""

    def __init__(self, pool: Any, lease: Any) -> None:
        self.pool = pool
        self.lease = lease

    async def exec(self, command: str, timeout: float) -> ExecResult:
        return await self.pool.exec.remote(self.lease, command, timeout)

    async def snapshot(self) -> WorkspaceSnapshot:
        return await self.pool.snapshot.remote(self.lease)


def failed_episode(spec: EpisodeSpec, reason: str, wall_s: float) -> Episode:
    return Episode(
        episode_id=spec.episode_id,
        task_id=spec.task.task_id,
        group_id=spec.group_id,
        policy_version=-1,
        stop_reason="failed",
        failure=reason,
        wall_s=wall_s,
    )


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=2)
class RolloutWorker:
    """Runs the episodes it is given concurrently: each waits on the engine or a sandbox most of the time."""

    def __init__(self, cfg: RunConfig, model_dir: str, policy: Any, grader: Any) -> None:
        from transformers import AutoTokenizer

        from services.sandbox_pool import pool_on_this_node

        capture_actor_output("rollout")
        self.cfg = cfg
        self.policy = policy
        self.pool = pool_on_this_node()  # sandboxes live on the node whose worker drives them
        self.grader = grader
        context = ray.get_runtime_context()
        self.owner = context.get_actor_id()  # the same across restarts of this worker
        if context.was_current_actor_reconstructed:  # the sandboxes the dead process held are nobody's now
            ray.get(self.pool.release_owner.remote(self.owner))
        tokenizer = AutoTokenizer.from_pretrained(
            fetch_dir(model_dir, cfg.paths.node_cache)
        )  # a model in storage: once per node
        self.runner = EpisodeRunner(cfg, tokenizer, self._generate, self._score, self._progress)
        self.metrics = _Metrics()
        self.in_flight = 0

    async def _generate(self, request: GenerateRequest) -> GenerateResult:
        return await self.policy.generate.remote(request)

    async def _score(self, prompt_ids: list[int], continuation_ids: list[int], adapter: str | None) -> list[float]:
        return await self.policy.score.remote(prompt_ids, continuation_ids, adapter)

    async def _progress(self, task: Task, snapshot: WorkspaceSnapshot) -> float:
        return await self.grader.progress.remote(task, snapshot)

    async def run(self, specs: list[EpisodeSpec]) -> list[Episode]:
        return list(await asyncio.gather(*(self.run_one(spec) for spec in specs)))

    async def run_one(self, spec: EpisodeSpec) -> Episode:
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            episode = await self._episode(spec)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
        self.metrics.episodes.inc(tags={"outcome": "failed" if episode.stop_reason == "failed" else "graded"})
        return episode

    async def _episode(self, spec: EpisodeSpec) -> Episode:
        started = time.perf_counter()
        fault: SandboxFault | None = None
        for _ in range(SANDBOX_ATTEMPTS):
            try:
                lease = await self.pool.lease.remote(spec.task.workspace_seed, owner=self.owner)
            except Exception as exc:  # the pool could not give a sandbox: this episode fails, the step goes on
                return failed_episode(spec, f"sandbox lease failed: {exc}", time.perf_counter() - started)
            try:
                episode, snapshot = await self.runner.run(spec, PoolSession(self.pool, lease))
            except SandboxFault as exc:  # the pool replaces that sandbox; the episode starts over, same seed
                fault = exc
                continue
            except Exception as exc:  # engine or sandbox fault in this episode only
                return failed_episode(spec, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
            finally:
                await self.pool.release.remote(lease)
            return await self.grader.finish.remote(episode, spec.task, snapshot)
        reason = f"SandboxFault in {SANDBOX_ATTEMPTS} sandboxes in a row, the last: {fault}"
        return failed_episode(spec, reason, time.perf_counter() - started)

    def mismatch_counts(self) -> dict[str, int]:
        """Chat-template re-render mismatches seen so far (reported in step metrics; never patched)."""
        return dict(self.runner.deltas.mismatches)


class _Metrics:
    """What Prometheus (and the Grafana dashboard in deploy/grafana/) sees of a rollout worker."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge

        self.in_flight = Gauge("fieldkit_rollout_episodes_in_flight", description="episodes this worker is running")
        self.episodes = Counter(
            "fieldkit_rollout_episodes", description="episodes finished, graded or failed", tag_keys=("outcome",)
        )
        self.in_flight.set(0)  # exported from the start, not from the first episode
