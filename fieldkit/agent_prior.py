"""The tiny agent's protocol prior: invented shell chores played through the agent protocol, to pretrain on.

A real instruct model (the reference's Qwen2.5-7B-Instruct) comes to RL already answering in the protocol: one
```bash block a turn, TASK_COMPLETE when the work is done. A tiny model with random weights knows nothing, and SFT on
42 ClawGym transcripts cannot teach it the format and the tasks at once (one epoch: loss 6.7 -> 6.2, no block ever
well formed). So the `tiny-agent` model is the tiny model pretrained on these dialogues: one to three file chores
(create, show, count, copy, move, delete, append, search) on made-up file names, each ending with TASK_COMPLETE.
No ClawGym task, template, workspace or persona is used: held-out tasks stay unseen, and whatever the agent knows
of them comes from SFT and RL.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from fieldkit.gym.protocol import SYSTEM_PROMPT, parse_action
from fieldkit.gym.transcripts import DONE_REPLY, command_reply

ROLES = ["student", "shop owner", "photographer", "teacher", "musician", "gardener", "translator", "chef", "pilot"]
CONTEXTS = [
    "They keep their notes in plain text files.",
    "Their project folder has grown messy.",
    "They like small, careful changes.",
    "They share this folder with a colleague.",
]
# No word below names a ClawGym file or directory, or occurs in a task (tests/test_agent_prior.py checks).
STEMS = ["memo", "chores", "jots", "report", "list", "plan", "recipe", "budget", "recap", "musings", "diary", "catalog"]
DIRS = ["attic", "boxes", "desk", "inbox", "spare", "shared", "trash", "stash", "scraps", "cellar"]
EXTS = ["txt", "md", "csv", "log", "json"]
WORDS = ["apple", "river", "stone", "cloud", "green", "quiet", "north", "amber", "delta", "lemon", "maple", "orbit"]

PRIOR_POOL = 4000  # dialogues the pretraining draws its batches from
PRIOR_WARMUP = 50  # steps of linear learning-rate warm-up
ACCURACY_DIALOGUES = 40  # fresh dialogues the build replays to report the prior's accuracy

Chore = tuple[str, str, str]  # (what the task asks, the command, what running it prints)


def _file(rng: random.Random) -> str:
    name = f"{rng.choice(STEMS)}{rng.choice(['', '_' + str(rng.randint(1, 9))])}.{rng.choice(EXTS)}"
    return f"{rng.choice(DIRS)}/{name}" if rng.random() < 0.4 else name


def _lines(rng: random.Random) -> str:
    return "\n".join(" ".join(rng.sample(WORDS, rng.randint(1, 4))) for _ in range(rng.randint(1, 4)))


def _create(rng: random.Random) -> Chore:
    path = _file(rng)
    return f"Create an empty file `{path}`.", f"touch {path}", ""


def _show(rng: random.Random) -> Chore:
    path = _file(rng)
    return f"Show what `{path}` holds.", f"cat {path}", _lines(rng)


def _count(rng: random.Random) -> Chore:
    path = _file(rng)
    n = rng.randint(0, 400)
    return f"How many lines does `{path}` have?", f"wc -l {path}", f"{n} {path}"


def _copy(rng: random.Random) -> Chore:
    src, dst = _file(rng), _file(rng)
    return f"Copy `{src}` to `{dst}`.", f"cp {src} {dst}", ""


def _move(rng: random.Random) -> Chore:
    src, dst = _file(rng), _file(rng)
    return f"Rename `{src}` to `{dst}`.", f"mv {src} {dst}", ""


def _delete(rng: random.Random) -> Chore:
    path = _file(rng)
    return f"Delete `{path}`.", f"rm -f {path}", ""


def _mkdir(rng: random.Random) -> Chore:
    path = f"{rng.choice(DIRS)}/{rng.choice(STEMS)}"
    return f"Make the directory `{path}`.", f"mkdir -p {path}", ""


def _append(rng: random.Random) -> Chore:
    path, text = _file(rng), " ".join(rng.sample(WORDS, 2))
    return f"Append the line `{text}` to `{path}`.", f"echo '{text}' >> {path}", ""


def _search(rng: random.Random) -> Chore:
    path, word = _file(rng), rng.choice(WORDS)
    return f"Find the lines of `{path}` that mention `{word}`.", f"grep {word} {path}", f"{word} {rng.choice(WORDS)}"


CHORES: list[Callable[[random.Random], Chore]] = [
    _create,
    _show,
    _count,
    _copy,
    _move,
    _delete,
    _mkdir,
    _append,
    _search,
]


def prior_dialogue(rng: random.Random) -> list[dict[str, str]]:
    """One invented task: the system and task prompts, a ```bash reply and observation per chore, TASK_COMPLETE."""
    chores = [rng.choice(CHORES)(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
    if len(chores) == 1:
        intent = chores[0][0]
    else:
        intent = "Tidy up: " + " ".join(f"({n}) {asked}" for n, (asked, _, _) in enumerate(chores, start=1))
    user = f"You are helping a {rng.choice(ROLES)}. {rng.choice(CONTEXTS)}\n\nTask: {intent}"
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    for _, command, printed in chores:
        messages.append({"role": "assistant", "content": command_reply(command)})
        messages.append({"role": "user", "content": f"OBSERVATION (exit 0)\n{printed or '(no output)'}"})
    messages.append({"role": "assistant", "content": DONE_REPLY})
    return messages


def prior_dialogues(n: int, seed: int) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    return [prior_dialogue(rng) for _ in range(n)]


def pretrain_on_prior(
    model: Any,
    tokenizer: Any,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Full-weight training of a float32 causal LM on prior dialogues, the loss on the agent's replies only.

    Returns the loss of every step; `progress(done, steps)` is called after each (minutes of work on 2 cores).
    Each step draws its batch from a pool of 4,000 dialogues; the vocabulary projection runs only where a reply
    token is predicted, which saves a third of a step on 2 cores."""
    import torch

    from fieldkit.training.sft import examples_from_chats

    pool = examples_from_chats(tokenizer, prior_dialogues(PRIOR_POOL, seed))
    draw = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / PRIOR_WARMUP) * max(0.1, 1.0 - s / steps)
    )
    losses = []
    model.train()
    for step in range(steps):
        batch = draw.sample(pool, batch_size)
        length = max(len(e.token_ids) for e in batch)
        ids = torch.full((len(batch), length), tokenizer.pad_token_id)
        attention = torch.zeros((len(batch), length), dtype=torch.long)
        trained = torch.zeros((len(batch), length), dtype=torch.bool)  # [B, T]: token t is a reply token
        for row, example in enumerate(batch):
            n = len(example.token_ids)
            ids[row, :n] = torch.tensor(example.token_ids)
            attention[row, :n] = 1
            trained[row, :n] = torch.tensor(example.assistant_mask, dtype=torch.bool)
        hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state  # [B, T, H]
        predictors = hidden[:, :-1][trained[:, 1:]]  # [N, H]: the positions that predict a reply token
        logits = model.lm_head(predictors)  # [N, V]
        loss = torch.nn.functional.cross_entropy(logits, ids[:, 1:][trained[:, 1:]])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, steps)
    model.eval()
    return losses


def prior_accuracy(model: Any, tokenizer: Any, n: int, seed: int) -> dict[str, float]:
    """How often `model`, greedy, replies as `n` prior dialogues drawn from `seed` do (choose a seed the pretraining
    did not use): each dialogue is replayed turn by turn with its own observations, up to its first wrong reply.
    `first_program`: the share whose first reply is a command of the right program (`cp`, `grep`, ...), names aside;
    `first_command`: the share whose first command is right, names included; `all_replies`: the share right to the
    end, every command and then TASK_COMPLETE."""
    import torch

    program = first = whole = 0
    for chat in prior_dialogues(n, seed):
        for k in range(2, len(chat), 2):  # the assistant's turns
            prompt = tokenizer.apply_chat_template(
                chat[:k], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.no_grad():
                out = model.generate(**prompt, max_new_tokens=64, do_sample=False)
            got = parse_action(tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True))
            want = parse_action(chat[k]["content"])
            if k == 2 and got.command and want.command:
                program += got.command.split()[0] == want.command.split()[0]
            if got != want:
                break
            first += k == 2
        else:
            whole += 1
    return {"first_program": program / n, "first_command": first / n, "all_replies": whole / n}
