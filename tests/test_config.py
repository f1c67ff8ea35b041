"""RunConfig: every shipped config validates; bad input names the field, the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fieldkit.config import ConfigError, RunConfig, field_reasons

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "deploy" / "configs").glob("*.yaml"))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml_text(text, source="t.yaml")
    return info.value.problems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = RunConfig.from_yaml(path)
    assert cfg.run_name


def test_empty_file_gives_the_documented_defaults() -> None:
    cfg = RunConfig.from_yaml_text("")
    assert cfg == RunConfig()
    assert cfg.rollout.max_turns == 12 and cfg.eval.temperature == 0.2


def test_broken_yaml_reports_line_and_column() -> None:
    (line,) = problems("model:\n  name_or_path: tiny\n  dtype: [bfloat16\n")
    assert line.startswith("YAML syntax error at line")


def test_unknown_key_names_dotted_field_and_allowed_keys() -> None:
    (line,) = problems("rollout:\n  max_turn: 5\n")
    assert line.startswith("rollout.max_turn: unknown key")
    assert "max_turns" in line and "group_size" in line


def test_wrong_type_names_field_value_and_rule() -> None:
    (line,) = problems("rollout:\n  group_size: many\n")
    assert line.startswith("rollout.group_size = 'many'") and "integer" in line


def test_literal_lists_the_allowed_values() -> None:
    (line,) = problems("algorithm:\n  name: ppo\n")
    assert "algorithm.name = 'ppo'" in line and "'grpo'" in line and "'a2tgpo'" in line


def test_every_problem_is_reported_at_once() -> None:
    lines = problems("seed: -1\nsandbox:\n  backend: vm\neval:\n  every_n_steps: 0\n")
    assert [line.split(" ")[0] for line in lines] == ["seed", "sandbox.backend", "eval.every_n_steps"]


def test_cross_field_rules_name_the_section() -> None:
    (rank,) = problems("lora:\n  rank: 128\n  max_lora_rank: 64\n")
    assert rank.startswith("lora = ") and "max_lora_rank 64" in rank
    (gpu,) = problems("resources:\n  engine_gpu_fraction: 0.7\n  learner_gpu_fraction: 0.5\n")
    assert "> 1" in gpu


def test_off_policy_knobs_per_preset_and_their_cross_field_rules() -> None:
    grpo, gspo, a2tgpo = (RunConfig.from_yaml_text(f"algorithm:\n  name: {n}\n").algorithm for n in
                          ("grpo", "gspo", "a2tgpo"))  # fmt: skip
    assert (grpo.behaviour_logprobs, grpo.is_correction, grpo.is_cap, grpo.dual_clip_c) == ("learner", "tis", 2.0, 3.0)
    assert gspo.is_correction == a2tgpo.is_correction == "mis"
    (line,) = problems("algorithm:\n  behaviour_logprobs: engine\n")
    assert line.startswith("algorithm = ") and "is_correction: none" in line
    engine = RunConfig.from_yaml_text("algorithm:\n  behaviour_logprobs: engine\n  is_correction: none\n")
    assert engine.algorithm.behaviour_logprobs == "engine"
    (kept,) = problems("rollout:\n  max_staleness: 1\ncheckpoint:\n  keep_last: 1\n")
    assert "checkpoint.keep_last = 1 < 1 + rollout.max_staleness" in kept


def test_think_cap_caps_the_per_turn_limit_and_never_raises_it() -> None:
    assert RunConfig.from_yaml_text("algorithm:\n  name: t2po\n").turn_token_limit == 256  # 450 would raise 256
    raised = RunConfig.from_yaml_text("algorithm:\n  name: t2po\nrollout:\n  max_tokens_per_turn: 600\n")
    assert raised.turn_token_limit == 450
    assert RunConfig().turn_token_limit == 256


def test_probe_tolerance_defaults_by_the_engines_dtype() -> None:
    lora = RunConfig().lora
    assert lora.resolved_probe_tolerance("float32") == 1e-3
    assert lora.resolved_probe_tolerance("bfloat16") == lora.resolved_probe_tolerance("float16") == 0.05
    assert lora.model_copy(update={"probe_tolerance": 0.2}).resolved_probe_tolerance("float32") == 0.2


def test_top_level_must_be_a_mapping() -> None:
    (line,) = problems("- a\n- b\n")
    assert "mapping" in line


def test_every_field_has_a_reason() -> None:
    missing = [field for field, reason in field_reasons().items() if not reason]
    assert missing == []


def test_config_hash_changes_with_content_only() -> None:
    assert RunConfig().config_hash() == RunConfig.from_yaml_text("seed: 0").config_hash()
    assert RunConfig().config_hash() != RunConfig.from_yaml_text("seed: 1").config_hash()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fieldkit.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_validate_ok_and_errors(tmp_path: Path) -> None:
    ok = run_cli("config", "validate", str(CONFIGS[0]))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  max_turn: 5\n  group_size: x\n")
    result = run_cli("config", "validate", str(bad))
    assert result.returncode == 2
    assert "rollout.max_turn: unknown key" in result.stderr
    assert "rollout.group_size = 'x'" in result.stderr

    missing = run_cli("config", "validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read file" in missing.stderr


def test_cli_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("config", "model", "demo"):
        assert command in result.stdout


def test_unknown_key_in_a_file_names_the_closest_valid_key() -> None:
    (line,) = problems("rollout:\n  max_turn: 5\n")
    assert "did you mean rollout.max_turns?" in line
    (top,) = problems("group_size: 8\n")  # a key in the wrong section: found by its name wherever it lives
    assert top.startswith("group_size: unknown key") and "did you mean rollout.group_size?" in top


def test_set_overrides_are_typed_by_yaml_and_win_over_the_file(tmp_path: Path) -> None:
    from fieldkit.overrides import load_config

    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  group_size: 2\n  workers: 3\nalgorithm:\n  name: dapo\n")
    sets = ["rollout.group_size=8", "algorithm.learning_rate=1e-6", "eval.validation_limit=null", "seed=7"]
    cfg = load_config(path, [*sets, "model.name_or_path=tiny-agent", "lora.target_modules=[q_proj, v_proj]"])
    assert cfg.rollout.group_size == 8 and cfg.rollout.workers == 3  # the file's other keys in that section stay
    assert cfg.algorithm.learning_rate == 1e-6 and cfg.algorithm.kl_beta == 0.0  # the dapo preset still applies
    assert cfg.eval.validation_limit is None and cfg.seed == 7 and cfg.model.name_or_path == "tiny-agent"
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert load_config(None, ["seed=1", "seed=2"]).seed == 2  # later wins
    assert load_config(path).config_hash() == RunConfig.from_yaml(path).config_hash()


def test_set_errors_name_the_key_the_closest_valid_key_and_every_problem() -> None:
    from fieldkit.overrides import load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, ["rollout.group_sze=8", "rollut.group_size=3", "rollout=3", "seed.x=1", "seed"])
    assert info.value.problems == [
        "rollout.group_sze: unknown key; did you mean rollout.group_size?",
        "rollut.group_size: no section rollut; did you mean rollout.group_size?",
        "rollout is a section: set one of its keys, e.g. rollout.tasks_per_step=...",
        "seed.x: seed is a value, not a section",
        "'seed': expected KEY=VALUE, e.g. rollout.group_size=8",
    ]
    with pytest.raises(ConfigError) as bad:  # a bad value is judged by RunConfig's own rules
        load_config(None, ["rollout.group_size=0", "algorithm.name=ppo"])
    assert bad.value.source == "defaults with --set rollout.group_size=0 algorithm.name=ppo"
    assert bad.value.problems[0].startswith("algorithm.name = 'ppo': Input should be 'grpo'")
    assert bad.value.problems[1].startswith("rollout.group_size = 0: Input should be greater than or equal to 1")


def test_cli_explain_shows_the_resolved_values_and_marks_overrides() -> None:
    import json

    result = run_cli("config", "explain", "--config", str(CONFIGS[0]), "--set", "rollout.group_size=8", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows["rollout.group_size"] == {"value": 8, "why": field_reasons()["rollout.group_size"], "set": True}
    assert rows["run_name"]["value"] == RunConfig.from_yaml(CONFIGS[0]).run_name and not rows["run_name"]["set"]
    bad = run_cli("config", "explain", "--set", "rollout.group_sze=8")
    assert bad.returncode == 2
    assert "rollout.group_sze: unknown key; did you mean rollout.group_size?" in bad.stderr
