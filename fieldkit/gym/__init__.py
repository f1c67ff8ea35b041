"""ClawGym: tasks, workspaces, the assertion grader, the agent protocol and the Episode/Turn records."""
