"""indie-game-dev: a Godot 2D platformer with levels as JSON, GDScript, sprites scattered around, export builds."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "indie-game-dev"

GAMES = ["Moss Knight", "Pixel Drift", "Lantern Hollow", "Skyward Sprout", "Cinder Run", "Tiny Tide"]
BIOMES = ["forest", "caves", "castle", "swamp", "tundra", "desert", "ruins"]
ENEMIES = ["slime", "bat", "goblin", "spider", "skeleton", "wisp", "crab"]
PLAYER_POSES = ["idle", "run", "jump", "fall", "climb", "hurt"]
SCRIPTS = {
    "player.gd": ["extends CharacterBody2D", "const SPEED = 180.0", "const JUMP_VELOCITY = -320.0"],
    "enemy.gd": ["extends CharacterBody2D", "@export var patrol_distance := 64.0", "var direction := 1"],
    "hud.gd": ["extends CanvasLayer", "@onready var coins_label = $Coins", "func update_coins(n): pass"],
    "save_system.gd": ["extends Node", 'const SAVE_PATH = "user://save.json"', "func save_game(): pass"],
    "camera.gd": ["extends Camera2D", "@export var smoothing := 6.0", "func shake(amount): pass"],
}
TODOS = [
    "# TODO: coyote time after leaving a ledge",
    "# TODO: knockback when hit",
    "# TODO: pool enemies instead of instancing",
    "# TODO: animate the coin counter",
    "# TODO: encrypt save file",
    "# TODO: clamp camera to level bounds",
    "# TODO: wall jump",
]


@dataclass
class World:
    ws: Workspace
    slug: str
    version: str
    levels: list[str]
    biomes: list[str]
    stray_player: list[str]
    stray_enemy: list[str]
    old_builds: list[str]
    new_build: str
    import_cache: list[str]
    log: str


def build(rng: random.Random) -> World:
    ws = Workspace()
    game = rng.choice(GAMES)
    slug = game.lower().replace(" ", "_")
    minor = rng.randint(2, 8)
    version = f"0.{minor}.{rng.randint(0, 4)}"
    ws.text(
        "project.godot",
        "; Engine configuration file.\nconfig_version=5\n\n[application]\n"
        f'config/name="{game}"\nconfig/version="{version}"\nrun/main_scene="res://scenes/main.tscn"\n\n'
        "[display]\nwindow/size/viewport_width=640\nwindow/size/viewport_height=360\n",
    )
    biomes = pick(rng, BIOMES, rng.randint(3, 5))
    levels = []
    for i, biome in enumerate(biomes, 1):
        level = {
            "name": f"{biome.title()} {rng.choice(['Trail', 'Depths', 'Climb', 'Gate', 'Run'])}",
            "biome": biome,
            "music": f"{biome}_theme",
            "width": rng.randrange(96, 320, 16),
            "enemies": rng.sample(ENEMIES, 2),
            "coins": rng.randint(20, 80),
        }
        levels.append(ws.text(f"levels/level_{i}.json", json.dumps(level, indent=2) + "\n"))
    todos = iter(rng.sample(TODOS, len(TODOS)))
    for name, lines in SCRIPTS.items():
        body = [*lines, "", "func _ready():", "\tpass"]
        if rng.random() < 0.6 or name == "player.gd":
            body.insert(1, next(todos))
        ws.text(f"scripts/{name}", "\n".join(body) + "\n")
    for scene in ("main", "player", "hud"):
        ws.text(
            f"scenes/{scene}.tscn", f'[gd_scene load_steps=2 format=3]\n\n[node name="{scene.title()}" type="Node2D"]\n'
        )
    poses = rng.sample(PLAYER_POSES, 5)
    for pose in poses[:3]:
        ws.stub(f"sprites/player/{pose}.png", rng.randint(900, 4000))
    stray_player = [ws.stub(f"player_{poses[3]}.png", 1800), ws.stub(f"scenes/player_{poses[4]}.png", 2100)]
    enemies = pick(rng, ENEMIES, 3)
    stray_enemy = [ws.stub(f"{e}_walk.png", rng.randint(600, 2400)) for e in enemies[:2]]
    ws.stub(f"sprites/enemies/{enemies[2]}_walk.png", 1500)
    ws.stub("audio/sfx/jump.wav", 12044)
    ws.stub("audio/music/theme.ogg", 88000)
    import_cache = [ws.stub(f".import/{p}.png-{rng.getrandbits(32):08x}.ctex", 512) for p in poses[:3]]
    old_builds = [ws.stub(f"builds/{slug}_v0.{m}.0.pck", 40000 + m) for m in range(max(1, minor - 2), minor)]
    new_build = ws.stub(f"builds/{slug}_v{version}.pck", 52000)
    kinds = [rng.choice(["DEATH", "CHECKPOINT", "COIN", "DEATH", "ERROR"]) for _ in range(rng.randint(14, 22))]
    kinds[0] = "START"
    for forced, index in zip(("ERROR", "DEATH"), rng.sample(range(1, len(kinds)), 2), strict=True):
        kinds[index] = forced  # every log has at least one of each, so the counting tasks never count zero
    events = []
    for minute, kind in enumerate(kinds):
        at = rng.randint(1, len(levels))
        detail = {
            "START": f"build {version}",
            "DEATH": f"level_{at} {rng.choice(['spikes', 'pit', *enemies])}",
            "CHECKPOINT": f"level_{at} flag {rng.randint(1, 3)}",
            "COIN": f"level_{at} total {rng.randint(1, 80)}",
            "ERROR": f"missing texture res://sprites/{rng.choice(poses)}.png",
        }[kind]
        events.append(f"[14:{minute:02d}:{rng.randint(10, 59)}] {kind} {detail}")
    log = ws.text("logs/playtest.log", "\n".join(events) + "\n")
    ws.text("CHANGELOG.md", f"# Changelog\n\n## {version}\n- New level: {biomes[-1]}\n- Fixed jump buffer\n")
    ws.text("notes/ideas.md", "# Ideas\n\n- double jump power-up\n- speedrun timer\n")
    return World(ws, slug, version, levels, biomes, stray_player, stray_enemy, old_builds, new_build, import_cache, log)


def pad_level(w: World, rng: random.Random) -> Draft:
    level = rng.choice(w.levels)
    n = int(level.split("_")[1].split(".")[0])
    return f.rename(w.ws, level, f"levels/level_{n:02d}.json", " so the level select sorts levels in order")


def file_player_sprites(w: World, rng: random.Random) -> Draft:
    return f.file_away(w.ws, w.stray_player, "sprites/player", " where the other player frames live")


def drop_old_builds(w: World, rng: random.Random) -> Draft:
    return f.delete(w.ws, w.old_builds, w.new_build, " (old export builds)")


def change_music(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        level = rng.choice(w.levels)
        old = json.loads(w.ws.content(level))["music"]
        return f.edit(w.ws, level, f'"music": "{old}"', '"music": "boss_theme"', " for the boss fight")
    major, minor, patch = w.version.split(".")
    new = f"{major}.{minor}.{int(patch) + 1}"
    return f.edit(w.ws, "project.godot", f'config/version="{w.version}"', f'config/version="{new}"')


def playtest_stats(w: World, rng: random.Random) -> Draft:
    choice = rng.randrange(3)
    if choice == 0:
        return f.count_matches(w.ws, "DEATH", w.log, "notes/deaths.txt", " for the difficulty review")
    if choice == 1:
        return f.grep_lines(w.ws, "TODO", w.ws.under("scripts", ".gd"), "notes/todo.txt")
    return f.extract(w.ws, w.log, 5, "notes/last_session.txt", "tail")


def tidy_sprites(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Clean up the sprite mess before the jam deadline:",
        [
            f.file_away(w.ws, w.stray_enemy, "sprites/enemies"),
            f.delete_tree(w.ws, ".import", "project.godot", " (Godot rebuilds this cache)"),
            f.append(w.ws, "notes/ideas.md", "- sprite sheets for enemies"),
            f.count_lines(w.ws, w.log, "notes/log_lines.txt"),
        ],
    )


def prepare_release(w: World, rng: random.Random) -> Draft:
    level = rng.choice(w.levels)
    return f.composite(
        "Prepare the release build folder:",
        [
            f.delete(w.ws, w.old_builds, w.new_build),
            f.copy(w.ws, level, level.replace("levels/", "backup/levels/")),
            f.append(w.ws, "CHANGELOG.md", f"- Packaged {w.slug}_v{w.version}.pck"),
            f.count_matches(w.ws, "ERROR", w.log, "notes/errors.txt"),
        ],
    )


def collect_notes(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Gather my notes from the last playtest:",
        [
            f.grep_lines(w.ws, "TODO", w.ws.under("scripts", ".gd"), "notes/todo.txt"),
            f.extract(w.ws, w.log, 3, "notes/last_events.txt", "tail"),
            f.make_dirs(w.ws, ["levels/drafts", "sprites/ui"]),
            f.file_away(w.ws, w.stray_player, "sprites/player"),
        ],
    )


def levels_by_biome(w: World, rng: random.Random) -> Draft:
    parts = [f.file_away(w.ws, [level], f"levels/{biome}") for level, biome in zip(w.levels, w.biomes, strict=True)]
    return f.composite(
        "Reorganise the levels into one folder per biome, then clean up:",
        [
            *parts[:4],
            f.delete_tree(w.ws, ".import", "project.godot"),
            f.write(w.ws, "levels/README.md", ["# Levels", *(f"- {b}" for b in w.biomes[:4])]),
        ],
    )


def restructure_assets(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Restructure the assets:",
        [
            f.file_away(w.ws, w.stray_player, "sprites/player"),
            f.file_away(w.ws, w.stray_enemy, "sprites/enemies"),
            f.delete_tree(w.ws, ".import", "project.godot"),
            f.delete(w.ws, w.old_builds, w.new_build),
            f.rename(w.ws, "notes/ideas.md", "design/ideas.md"),
            f.count_lines(w.ws, w.log, "docs/playtest_lines.txt"),
        ],
    )


RECIPES = (
    pad_level,
    file_player_sprites,
    drop_old_builds,
    change_music,
    playtest_stats,
    tidy_sprites,
    prepare_release,
    collect_notes,
    levels_by_biome,
    restructure_assets,
)
