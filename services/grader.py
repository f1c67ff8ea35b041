"""Grader: grades final workspaces (as snapshots, so it can run on any node) and computes rewards.

A thin shell around fieldkit.gym.grader and fieldkit.reward. For A2TGPO's `progress` information gain it also
grades intermediate snapshots: the share of assertions a workspace passes right now.
"""

from __future__ import annotations

import ray

from fieldkit.config import RunConfig
from fieldkit.gym.grader import grade
from fieldkit.gym.records import Episode, WorkspaceSnapshot
from fieldkit.gym.task import Task
from fieldkit.reward import episode_reward
from services.logs import capture_actor_output


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)  # stateless: a retried call gives the same answer
class Grader:
    def __init__(self, cfg: RunConfig) -> None:
        capture_actor_output("grader")
        self.reward_kind = cfg.algorithm.reward
        self.max_turns = cfg.rollout.max_turns

    def finish(self, episode: Episode, task: Task, snapshot: WorkspaceSnapshot) -> Episode:
        """The episode with its grade and reward filled in."""
        graded = episode.model_copy(update={"grade": grade(task, snapshot)})
        return graded.model_copy(update={"reward": episode_reward(graded, self.reward_kind, self.max_turns).value})

    def progress(self, task: Task, snapshot: WorkspaceSnapshot) -> float:
        result = grade(task, snapshot)
        return result.n_passed / result.n_total
