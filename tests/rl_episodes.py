"""Episode builders for the RL tests: the fields an estimator reads, with small token sequences."""

from __future__ import annotations

from fieldkit.gym.records import Action, Episode, ExecResult, Turn


def make_turn(
    index: int,
    *,
    exit_code: int | None = 0,
    kind: str = "command",
    info_gain: float | None = None,
    prompt: tuple[int, ...] = (1, 2),
    response: tuple[int, ...] = (3, 4),
    logprobs: tuple[float, ...] | None = None,
    temperature: float = 1.0,
) -> Turn:
    """A turn: `exit_code` None runs no command (done or parse error)."""
    return Turn(
        index=index,
        prompt_token_ids=list(prompt),
        response_token_ids=list(response),
        response_logprobs=list(logprobs) if logprobs is not None else [-1.0] * len(response),
        response_text="",
        action=Action(kind=kind, command="ls" if kind == "command" else None),  # type: ignore[arg-type]
        exec_result=ExecResult(exit_code=exit_code) if exit_code is not None else None,
        info_gain=info_gain,
        temperature=temperature,
    )


def make_episode(name: str, reward: float, turns: list[Turn], *, group: str = "g0", version: int = 0) -> Episode:
    return Episode(
        episode_id=name,
        task_id="task",
        group_id=group,
        policy_version=version,
        turns=turns,
        stop_reason="task_complete",
        reward=reward,
    )


def one_turn_group(rewards: list[float], group: str = "g0") -> list[Episode]:
    return [make_episode(f"{group}-e{i}", r, [make_turn(0)], group=group) for i, r in enumerate(rewards)]
