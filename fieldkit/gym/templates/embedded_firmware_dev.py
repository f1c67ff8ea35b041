"""embedded-firmware-dev: a board-bringup repo with device-tree fragments, Kconfig snippets and bring-up logs
for several boards lying at the top level, to be filed into per-board directories."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "embedded-firmware-dev"

BOARDS = ["rk3399-evb", "imx8mm-evk", "stm32mp157-dk2", "rpi-cm4", "nrf5340-dk", "esp32-s3-devkit", "sama5d2-xult"]
PERIPHERALS = ["uart2", "i2c1", "spi0", "usb-otg", "emmc", "ethernet", "pwm3"]


@dataclass
class World:
    ws: Workspace
    boards: list[str]
    files_by_board: dict[str, list[str]]  # top-level files that belong to each board
    logs: list[str]
    failing_log: str  # the log with kernel panics
    drivers: list[str]


def _dts(board: str, peripherals: list[str]) -> str:
    nodes = "\n".join(
        f'\t{p}: {p}@{0x10000 * (i + 1):08x} {{\n\t\tstatus = "okay";\n\t}};' for i, p in enumerate(peripherals)
    )
    return f'/dts-v1/;\n/ {{\n\tmodel = "{board}";\n\tcompatible = "vendor,{board}";\n}};\n\n{nodes}\n'


def _bringup_log(rng: random.Random, board: str, panic: bool) -> str:
    lines = [f"U-Boot 2024.04 ({board})", "DRAM:  2 GiB", "Starting kernel ..."]
    for t in range(rng.randint(6, 12)):
        status = "probed" if t == 0 else rng.choice(["probed", "registered", "deferred probe"])
        lines.append(f"[{t * 0.35 + 0.1:9.6f}] {rng.choice(PERIPHERALS)}: {status}")
    if panic:
        lines.append(f"[{4.2:9.6f}] Kernel panic - not syncing: VFS: Unable to mount root fs on {board} mmcblk0p2")
    lines.append("login:" if not panic else "---[ end Kernel panic ]---")
    return "\n".join(lines) + "\n"


def build(rng: random.Random) -> World:
    ws = Workspace()
    boards = pick(rng, BOARDS, rng.randint(2, 3))
    panicking = rng.choice(boards)
    files_by_board: dict[str, list[str]] = {}
    logs = []
    for board in boards:
        peripherals = rng.sample(PERIPHERALS, 3)
        debug = rng.choice(["y", "n"])
        own = [
            ws.text(f"{board}.dtsi", _dts(board, peripherals)),
            ws.text(
                f"Kconfig.{board}",
                f'config BOARD_{board.upper().replace("-", "_")}\n\tbool "{board}"\n\tdefault y\n\n'
                f"CONFIG_DEBUG_UART={debug}\nCONFIG_SPL=y\nCONFIG_BAUDRATE={rng.choice([115200, 1500000])}\n",
            ),
            ws.text(f"bringup_{board}_2024-0{rng.randint(1, 9)}.log", _bringup_log(rng, board, board == panicking)),
        ]
        logs.append(own[2])
        files_by_board[board] = own
    drivers = []
    for name in pick(rng, ["pmic", "leds", "fan", "eeprom", "rtc"], 3):
        drivers.append(
            ws.text(f"drivers/{name}.c", f'#include "board.h"\n\nint {name}_init(void)\n{{\n\treturn 0;\n}}\n')
        )
        ws.text(f"drivers/{name}.h", f"#pragma once\nint {name}_init(void);\n")
    ws.text("include/board.h", "#pragma once\n#define BOARD_REV 2\n#define DEBUG_LEVEL 3\n")
    ws.text("Makefile", "obj-y += drivers/\nCFLAGS += -Os -Wall\n")
    ws.stub("build/u-boot.bin", 650_000)
    ws.stub("build/spl.bin", 42_000)
    ws.text("README.md", "# Board bring-up\n\nBoards: " + ", ".join(boards) + "\n")
    return World(ws, boards, files_by_board, logs, logs[boards.index(panicking)], drivers)


def file_one_board(w: World, rng: random.Random) -> Draft:
    board = rng.choice(w.boards)
    return f.file_away(w.ws, w.files_by_board[board], f"boards/{board}", " so each board has its own directory")


def enable_debug_uart(w: World, rng: random.Random) -> Draft:
    board = rng.choice(w.boards)
    kconfig = w.files_by_board[board][1]
    current = "y" if "CONFIG_DEBUG_UART=y" in w.ws.content(kconfig) else "n"
    flipped = "n" if current == "y" else "y"
    why = " for early console output" if flipped == "y" else " (it slows down boot)"
    return f.edit(w.ws, kconfig, f"CONFIG_DEBUG_UART={current}", f"CONFIG_DEBUG_UART={flipped}", why)


def panic_report(w: World, rng: random.Random) -> Draft:
    choice = rng.randrange(3)
    if choice == 0:
        return f.grep_lines(w.ws, "Kernel panic", w.logs, "panics.txt", " for the bug report")
    if choice == 1:
        return f.extract(w.ws, w.failing_log, 4, f"reports/{w.failing_log[:-4]}_tail.txt", "tail")
    return f.count_matches(w.ws, "probed", rng.choice(w.logs), "reports/probed.txt", " (drivers that came up)")


def clean_build(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        return f.delete_tree(w.ws, "build", rng.choice(["Makefile", "include/board.h"]), " (stale images)")
    return f.make_dirs(w.ws, [f"boards/{b}" for b in w.boards], " for the per-board layout")


def header_tweak(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        level = rng.choice(["0", "1", "2"])
        return f.edit(w.ws, "include/board.h", "#define DEBUG_LEVEL 3", f"#define DEBUG_LEVEL {level}", " for release")
    return f.copy(
        w.ws, "include/board.h", f"include/board_rev{rng.randint(3, 5)}.h", " as the start of the next revision"
    )


def file_two_boards(w: World, rng: random.Random) -> Draft:
    first, second = pick(rng, w.boards, 2)
    return f.composite(
        "File the bring-up material per board:",
        [
            f.file_away(w.ws, w.files_by_board[first], f"boards/{first}"),
            f.file_away(w.ws, w.files_by_board[second], f"boards/{second}"),
        ],
    )


def triage_panic(w: World, rng: random.Random) -> Draft:
    board = next(b for b in w.boards if w.files_by_board[b][2] == w.failing_log)
    return f.composite(
        f"The {board} does not boot; collect what I need for triage:",
        [
            f.grep_lines(w.ws, "Kernel panic", [w.failing_log], f"triage/{board}/panic.txt"),
            f.copy(w.ws, w.files_by_board[board][0], f"triage/{board}/{board}.dtsi"),
            f.write(w.ws, f"triage/{board}/NOTES.md", [f"# {board} triage", "rootfs does not mount: check mmcblk0p2"]),
            f.delete_tree(w.ws, "build", "Makefile"),
        ],
    )


def new_driver(w: World, rng: random.Random) -> Draft:
    name = rng.choice(["watchdog", "battery", "buzzer", "accel"])
    return f.composite(
        f"Add a stub {name} driver:",
        [
            f.write(
                w.ws,
                f"drivers/{name}.c",
                ['#include "board.h"', "", f"int {name}_init(void)", "{", "    return 0;", "}"],
            ),
            f.write(w.ws, f"drivers/{name}.h", ["#pragma once", f"int {name}_init(void);"]),
            f.append(w.ws, "Makefile", f"obj-y += drivers/{name}.o"),
            f.grep_files(w.ws, "_init(void)", "drivers", "docs/driver_index.txt"),
        ],
    )


def per_board_layout(w: World, rng: random.Random) -> Draft:
    parts = [f.file_away(w.ws, w.files_by_board[b], f"boards/{b}") for b in w.boards]
    return f.composite(
        "Move the repo to the per-board layout:",
        [
            *parts,
            f.delete_tree(w.ws, "build", "Makefile"),
            f.file_away(w.ws, w.drivers, "common/drivers"),
            f.write(w.ws, "boards/README.md", ["# Boards", *(f"- {b}" for b in w.boards)]),
        ],
    )


def release_prep(w: World, rng: random.Random) -> Draft:
    board = rng.choice(w.boards)
    own = w.files_by_board[board]
    return f.composite(
        f"Prepare the {board} release branch:",
        [
            f.file_away(w.ws, own, f"boards/{board}"),
            f.edit(w.ws, "include/board.h", "#define DEBUG_LEVEL 3", "#define DEBUG_LEVEL 0"),
            f.delete_tree(w.ws, "build", "Makefile"),
            f.copy(w.ws, "README.md", f"release/{board}/README.md"),
            f.count_lines(w.ws, next(log for log in w.logs if log not in own), "release/other_log_lines.txt"),
            f.make_dirs(w.ws, [f"release/{board}/images"]),
        ],
    )


RECIPES = (
    file_one_board,
    enable_debug_uart,
    panic_report,
    clean_build,
    header_tweak,
    file_two_boards,
    triage_panic,
    new_driver,
    per_board_layout,
    release_prep,
)
