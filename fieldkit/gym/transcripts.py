"""Oracle transcripts: a task's reference solution played through the agent protocol, as chat messages.

What a perfect agent would have said and seen: the system and task prompts, one ```bash reply per reference
command with the real observation of running it, and (optionally) the closing TASK_COMPLETE. They are the SFT
warm-start corpus. The reference run's SFT corpus held no clean stops
(`with_stop=False` reproduces that): its SFT adapter learned never to stop, and GRPO unlearned it.
"""

from __future__ import annotations

from fieldkit.gym.oracle import OracleRun
from fieldkit.gym.protocol import format_observation, initial_messages
from fieldkit.gym.task import Task

DONE_REPLY = "TASK_COMPLETE"


def command_reply(command: str) -> str:
    return f"```bash\n{command}\n```"


def oracle_transcript(task: Task, run: OracleRun, *, with_stop: bool) -> list[dict[str, str]]:
    if len(run.results) != len(task.reference_solution):
        raise ValueError(
            f"task {task.task_id}: {len(run.results)} results for {len(task.reference_solution)} reference commands"
        )
    messages = initial_messages(task)
    for command, result in zip(task.reference_solution, run.results, strict=True):
        messages.append({"role": "assistant", "content": command_reply(command)})
        messages.append({"role": "user", "content": format_observation(result)})
    if with_stop:
        messages.append({"role": "assistant", "content": DONE_REPLY})
    else:
        messages.pop()  # end on the last command: nothing after it teaches what comes next
    return messages
