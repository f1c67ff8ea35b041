"""RL algorithms: advantage estimators in plain Python (one file each, registered by name in `advantages`), the
Episode-groups -> TrainBatch builder, and the policy losses (torch, imported inside functions)."""
