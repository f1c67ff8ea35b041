"""Bad input, generated: the inputs a user or a model hands us (replies, configs, task files, adapter directories)
give a clear error naming the field, line or file, and never another exception.

The parser's plain-text property lives in tests/test_gym_protocol.py; here it gets text built from the pieces its
rules look at (fences, language tags, TASK_COMPLETE, prompts, comments, Unicode line breaks), which plain text
almost never assembles. What these properties found is fixed and pinned by the examples below each test.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fieldkit.config import ConfigError, RunConfig
from fieldkit.generation import AdapterRejectedError
from fieldkit.gym.protocol import format_parse_error, parse_action
from fieldkit.training.records import AdapterRef

# a few seconds per property here; the whole file stays around a minute on a busy 2-core box
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- the action parser ---------------------------------------------------------------------------------------------

REPLY_PIECES = st.sampled_from(
    [
        *("```", "```bash", "```sh", "```python", "``", "`", "\n", "\r\n", "\u2028", " ", "\t", "$ ", "$", "# ", "#"),
        *("TASK_COMPLETE", "task_complete", "echo", ' "Task complete."', "ls -la", ">", "|", "tee", "'", '"', "\\"),
    ]
)
replies = st.lists(st.one_of(REPLY_PIECES, st.text(max_size=8)), max_size=30).map("".join)


@FUZZ
@given(replies)
@example("```bash\n$ \n```")  # a prompt sign with no command after it
@example("```bash\nls\u2028pwd\n```")  # U+2028 inside the command: only "\\n" ends a line, as for bash
@example("```\n```\n```bash\nls\n```")
def test_the_parser_never_raises_on_replies_built_from_its_own_syntax(reply: str) -> None:
    action = parse_action(reply)
    if action.kind == "parse_error":
        assert action.error and action.error in format_parse_error(action)
    elif action.kind == "command":
        command = action.command or ""
        assert command and command == command.strip() and "\n" not in command
    else:
        assert action.kind == "done"


@pytest.mark.parametrize("reply", [None, 42, b"```bash\nls\n```", ["ls"]])
def test_a_reply_that_is_not_text_is_a_parse_error(reply: Any) -> None:
    action = parse_action(reply)
    assert action.kind == "parse_error" and type(reply).__name__ in (action.error or "")


# --- the config loader ---------------------------------------------------------------------------------------------

SECTIONS = {name: info.annotation for name, info in RunConfig.model_fields.items()}
FIELD_NAMES = sorted(
    {name for section in SECTIONS.values() for name in getattr(section, "model_fields", {})} | set(SECTIONS)
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["vllm", "hf", "grpo", "dapo", "bfloat16", "tiny", "auto", "docker", "runs/x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
sections = st.dictionaries(keys, values, max_size=5)  # a section's worth of fields, names mostly real
configs = st.dictionaries(keys, st.one_of(sections, values), max_size=6)

YAML_PIECES = st.sampled_from(
    [
        *(
            ":",
            ": ",
            "\n",
            "\n  ",
            "  ",
            "- ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&a ",
            "*a",
            "!!str ",
            "!!int ",
            "? ",
            "'",
            '"',
        ),
        *("#", "---", "...", "|", ">", "%YAML 1.1", "~", "null", ".inf", "1e400", "0x1f", "yes", "\t", "\ufeff"),
        *("!!float ", "!!timestamp ", "!!binary ", "!!set ", "!!omap "),
        *SECTIONS,
        *("rank", "engine", "name", "backend", "num_gpus", "group_size", "runs_dir", "target_modules"),
    ]
)
yaml_texts = st.lists(st.one_of(YAML_PIECES, st.text(max_size=6)), max_size=40).map("".join)

DOCUMENT_PROBLEMS = ("YAML syntax error", "YAML nested too deeply", "YAML value cannot be read", "top level must be")


def named_path(problem: str) -> list[str]:
    """The dotted field a problem starts with: `a.b = value: why` or `a.b: why`."""
    return problem.split(" ", 1)[0].removesuffix(":").split(".")


def resolves(data: Any, path: list[str]) -> bool:
    """Whether `path` names something in `data`: a key of a mapping or an index of a list at each step."""
    for part in path:
        if isinstance(data, dict):
            matches = [k for k in data if str(k) == part]
            if not matches:
                return False
            data = data[matches[0]]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def load(text: str) -> RunConfig | None:
    try:
        return RunConfig.from_yaml_text(text, source="fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert str(exc).startswith("fuzz.yaml: invalid config")
        return None


@FUZZ
@given(yaml_texts)
@example("a: " + "[" * 2000 + "]" * 2000)  # PyYAML recursed out of the stack: a RecursionError escaped
@example("model: &a {engine: *a}")  # an alias cycle
@example("? [a]\n: 1")  # an unhashable key
@example("!!int ")  # PyYAML's int constructor raised IndexError on no digits
@example("seed: !!timestamp 2020-13-45")  # ... and ValueError on a month 13
def test_yaml_ish_text_gives_a_config_or_a_config_error(text: str) -> None:
    load(text)


@FUZZ
@given(configs)
@example({"resources": {"engine_gpu_fraction": 0.9, "learner_gpu_fraction": 0.9}})
@example({"lora": {"rank": 128, "max_lora_rank": 64}})
@example({"algorithm": {"name": ["grpo"]}})
def test_each_problem_of_a_nested_dict_names_a_field_that_is_in_it(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        RunConfig.from_yaml_text(text, source="fuzz.yaml")
    except ConfigError as exc:
        for problem in exc.problems:
            assert not problem.startswith(DOCUMENT_PROBLEMS), problem
            assert resolves(yaml.safe_load(text), named_path(problem)), problem


@FUZZ
@given(yaml_texts)
@example("yes:")  # a bool key: pydantic named it `1`, which is no key of the text
def test_document_level_problems_are_the_only_ones_without_a_field(text: str) -> None:
    try:
        RunConfig.from_yaml_text(text, source="fuzz.yaml")
    except ConfigError as exc:
        if exc.problems[0].startswith(DOCUMENT_PROBLEMS):
            assert len(exc.problems) == 1
        else:
            # keys here are arbitrary text (dots, colons): each problem starts with one of the top-level keys
            top = [str(key) for key in yaml.safe_load(text)]
            assert all(any(p.startswith(key) for key in top) for p in exc.problems), exc.problems


# --- fieldkit gym validate -----------------------------------------------------------------------------------------


@functools.cache
def valid_lines() -> list[str]:
    """Six generated tasks, one JSON line each (not a fixture: hypothesis would print them with every failure)."""
    from fieldkit.gym.generator import generate_tasks

    return [task.model_dump_json() for task in generate_tasks(1, 0)[:6]]


def corrupt(line: str, how: int, junk: str) -> str:
    """A task line made invalid one way: a required field gone, a wrong type, an unknown key, cut short."""
    data = json.loads(line)
    if how == 0:
        del data["intent"]
    elif how == 1:
        data["estimated_steps"] = junk
    elif how == 2:
        data[f"x_{junk}"] = 1
    else:
        return line[: len(line) // 2]
    return json.dumps(data, ensure_ascii=False)


# A file on disk is UTF-8, which cannot hold a lone surrogate (category Cs): the junk is any other text.
writable = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
bad_lines = st.one_of(
    st.text(alphabet=writable, min_size=1).filter(lambda s: s.strip()),
    st.tuples(st.integers(0, 3), st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10)),
)


@settings(FUZZ, max_examples=40)  # each example runs the command on a file of up to 8 tasks
@given(
    st.lists(st.tuples(st.booleans(), bad_lines), min_size=1, max_size=8),
    st.sampled_from(["", "\u2028", "\u2029", "\x85"]),  # raw in a JSON string (control characters may not be)
    st.sampled_from(["", " ", "\r", "\t"]),  # JSON whitespace
)
@example([(True, "x"), (False, "{bad")], "\u2028", "")  # splitlines() cut a valid line at U+2028, misnumbering the rest
@example([(True, "x"), (False, "{bad")], "", "\r")  # universal newlines cut a valid line at a lone "\r"
@example([(False, "\r0")], "", "")
def test_gym_validate_names_each_malformed_line(
    tmp_path: Path, rows: list[tuple[bool, Any]], separator: str, whitespace: str
) -> None:
    from typer.testing import CliRunner

    from fieldkit.cli import app

    lines, bad = [], set()
    for number, (valid, junk) in enumerate(rows, 1):
        good = valid_lines()[(number - 1) % len(valid_lines())]
        # JSON strings may hold raw Unicode line separators; a valid task with one stays valid
        good = "{" + whitespace + good[1:].replace('"intent":"', f'"intent":"{separator}', 1)
        if valid and number <= len(valid_lines()):  # each valid task once: a repeat would be a duplicate task_id
            lines.append(good)
        else:
            lines.append(corrupt(good, *junk) if isinstance(junk, tuple) else junk)
            bad.add(number)
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["gym", "validate", str(path)])
    named = {int(m) for m in re.findall(rf"^{re.escape(str(path))}:(\d+): ", result.output, re.MULTILINE)}
    assert named == bad, result.output
    assert result.exit_code == (1 if bad else 0), result.output


# --- adapter directories -------------------------------------------------------------------------------------------


def adapter_dir(root: Path, config: str | None, weights: bytes | None) -> AdapterRef:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (("adapter_config.json", config), ("adapter_model.safetensors", weights)):
        target = root / name
        target.unlink(missing_ok=True)
        if content is not None:
            target.write_bytes(content.encode() if isinstance(content, str) else content)
    return AdapterRef(name="fuzz", version=1, path=str(root), rank=8)


def good_weights() -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({"base_model.model.q_proj.lora_A.weight": np.ones((8, 16), dtype=np.float32)})


GOOD_CONFIG = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]})
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10,
)
headers = st.one_of(
    json_values,
    st.dictionaries(
        st.text(max_size=8),
        st.fixed_dictionaries(
            {},
            optional={
                "dtype": st.sampled_from(["F32", "BF16", "F16", "I8", "XX", 3]),
                "shape": st.lists(st.integers(-2, 20), max_size=3) | json_values,
                "data_offsets": st.lists(st.integers(-4, 600), min_size=0, max_size=3) | json_values,
            },
        ),
        max_size=3,
    ),
)


def with_header(header: Any, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


weights = st.one_of(
    st.binary(max_size=64),
    st.integers(0, 600).map(lambda n: good_weights()[:n]),  # truncated
    st.tuples(headers, st.binary(max_size=600)).map(lambda hb: with_header(*hb)),
    st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=64)).map(lambda nb: struct.pack("<Q", nb[0]) + nb[1]),
)
configs_text = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"peft_type": st.sampled_from(["LORA", "IA3", 1]), "r": json_values | st.integers(1, 600)}
    ).map(json.dumps),
)


@FUZZ
@given(st.one_of(st.none(), configs_text, st.just(GOOD_CONFIG)), st.one_of(st.none(), weights))
@example(GOOD_CONFIG, with_header({"a": {"data_offsets": 5}}, b""))  # TypeError escaped the header check
@example(GOOD_CONFIG, with_header({"a": {"data_offsets": [0, None]}}, b""))
@example(GOOD_CONFIG, with_header({"a": {"dtype": "F32", "shape": [9], "data_offsets": [0, 4]}}, b"\0" * 4))
def test_a_corrupt_adapter_dir_is_refused_naming_its_file(
    tmp_path: Path, config: str | None, weights: bytes | None
) -> None:
    from safetensors import safe_open

    from services.policy.adapters import inspect_adapter_dir

    ref = adapter_dir(tmp_path / "adapter", config, weights)
    try:
        inspect_adapter_dir(ref, max_lora_rank=64)
    except AdapterRejectedError as exc:
        assert "adapter_config.json" in str(exc) or "adapter_model.safetensors" in str(exc), str(exc)
        return
    # accepted: then the weights really are readable, tensor by tensor
    with safe_open(str(Path(ref.path) / "adapter_model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118  (safe_open handles are not iterable)
            handle.get_tensor(key)


def test_a_well_formed_adapter_dir_passes(tmp_path: Path) -> None:
    from services.policy.adapters import inspect_adapter_dir

    inspect_adapter_dir(adapter_dir(tmp_path / "ok", GOOD_CONFIG, good_weights()), max_lora_rank=64)
