"""Run one docs block as a reader would and say how its output differs from the doc.

``console`` blocks: every ``$ cmd`` runs in one bash session; the lines after it are its
expected output, matched against what it printed, stdout and stderr in one stream in the
order a terminal shows them (one pipe for both, Python unbuffered). ``sh``/``bash``/``shell``
blocks are scripts run with ``bash -e -o pipefail``, ``python`` blocks programs run by the
checkout's ``python3``; only their exit status counts.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from helpers.docblocks import Block

#: A line that is only this matches any number of lines; inside a line, any text.
ELLIPSES = ("...", "…")
_ELLIPSIS = re.compile(r"\.\.\.|…")
#: Volatile text normalised on both sides before comparing.
_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{12,}\b"), "<hex>"),
    (re.compile(r"\bduration_ms=\d+"), "duration_ms=<n>"),
    (re.compile(r"\b\d+(?:\.\d+)? ?(?:ms|s)\b"), "<time>"),
]


@dataclass(frozen=True)
class Command:
    """One ``$ `` command of a console block and the output the doc shows for it."""

    text: str
    expected: tuple[str, ...]
    line: int  # 1-based, in the Markdown file


def parse_console(block: Block) -> list[Command]:
    """The commands of a console block (continuation lines end in ``\\``)."""
    commands: list[Command] = []
    text: list[str] = []
    expected: list[str] = []
    start = 0
    continued = False
    for offset, line in enumerate(block.content.rstrip("\n").split("\n")):
        if continued:
            text.append(line)
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            if text:
                commands.append(Command("\n".join(text), tuple(expected), start))
            text, expected, start = [line[2:]], [], block.line + 1 + offset
            continued = line.endswith("\\")
        elif text:
            expected.append(line)
    if text:
        commands.append(Command("\n".join(text), tuple(expected), start))
    return [_trim(c) for c in commands]


def _trim(command: Command) -> Command:
    """Blank lines after the output (before the next command or the fence) are spacing."""
    lines = list(command.expected)
    while lines and not lines[-1].strip():
        lines.pop()
    return Command(command.text, tuple(lines), command.line)


def normalise(line: str) -> str:
    line = line.rstrip()
    for pattern, replacement in _VOLATILE:
        line = pattern.sub(replacement, line)
    return line


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = _ELLIPSIS.split(normalise(expected))
    return re.compile(".*".join(re.escape(p) for p in parts), re.S)


def output_matches(expected: tuple[str, ...], printed: list[str]) -> bool:
    """Whether ``expected`` shows ``printed`` (a ``...`` line stands for any lines)."""
    items = [None if e.strip() in ELLIPSES else _line_pattern(e) for e in expected]
    lines = [normalise(x) for x in printed]
    # ok[i]: items[e:] match lines[i:], for the current e — filled from the end.
    ok = [False] * len(lines) + [True]
    for item in reversed(items):
        following, ok = ok, [False] * (len(lines) + 1)
        for i in range(len(lines), -1, -1):
            if item is None:
                ok[i] = following[i] or (i < len(lines) and ok[i + 1])
            else:
                ok[i] = i < len(lines) and bool(item.fullmatch(lines[i])) and following[i + 1]
    return ok[0]


@dataclass(frozen=True)
class Ran:
    """What one command printed and its exit status."""

    command: Command
    printed: list[str]
    status: int


def pyro_bin(into: Path) -> Path:
    """A directory for PATH where ``pyro``, ``python3`` and ``python`` are the checkout's."""
    into.mkdir(parents=True, exist_ok=True)
    for name, args in (("pyro", '-m pyro.cli "$@"'), ("python3", '"$@"'), ("python", '"$@"')):
        script = into / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args}\n')
        script.chmod(0o755)
    return into


def block_env(root: Path, bin_dir: Path, base: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join([str(bin_dir), base.get("PATH", os.defpath)])
    return {
        **base,
        "PATH": path,
        "PYTHONPATH": str(root),
        "PYTHONSAFEPATH": "1",
        # stdout and stderr share one pipe: written as they come, as on a terminal.
        "PYTHONUNBUFFERED": "1",
    }


def prepare_workdir(root: Path, workdir: Path) -> None:
    """The block's cwd: a copy of the checkout's files (tracked and new, not ignored), so a
    block runs as from the repository root. Symlinks stay links (they are relative)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, target = root / name, workdir / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the worktree, not yet in the index
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def check_listing(block: Block, root: Path) -> list[str]:
    """A ``file PATH`` block must be byte-identical to ``root/PATH``."""
    marker = block.marker("file")
    assert marker is not None
    listed = root / marker.arg
    if not listed.is_file():
        return [f"{block.id}: lists {marker.arg}, which does not exist"]
    actual = listed.read_text()
    if block.content == actual:
        return []
    diff = difflib.unified_diff(
        block.content.splitlines(), actual.splitlines(), "the doc", marker.arg, lineterm=""
    )
    return [f"{block.id}: the listing differs from {marker.arg}:\n" + "\n".join(diff)]


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float = 300) -> list[str]:
    """Run ``block``; the problems found (empty: it runs as written)."""
    if block.lang == "console":
        return run_console(block, cwd, env, timeout)
    if block.lang == "python":
        program = cwd.parent / f"docs-block-{block.line}.py"
        program.write_text(block.content)
        script = "\n".join([*block.setup, f"python3 {shlex.quote(str(program))}"])
    else:
        script = "\n".join([*block.setup, block.content])
    proc = _bash(["-e", "-o", "pipefail", "-c", script], cwd, env, timeout)
    if proc.returncode != 0:
        return [f"{block.id}: the script exited {proc.returncode}\n--- output\n{proc.stdout}"]
    return []


def run_console(block: Block, cwd: Path, env: dict[str, str], timeout: float) -> list[str]:
    commands = parse_console(block)
    mark = f"@@docs-test-{uuid.uuid4().hex}@@"
    # After the setup and after each command: a marker line with its status; then the
    # status is restored, so that a following `echo $?` shows the command's.
    after = f'__docs_rc=$?; printf "\\n{mark} %d\\n" $__docs_rc; (exit $__docs_rc)'
    parts = [*block.setup, after]
    for command in commands:
        parts += [command.text, after]
    proc = _bash(["-c", "\n".join(parts)], cwd, env, timeout)
    chunks = proc.stdout.split(mark)
    if len(chunks) != len(commands) + 2:
        return [
            f"{block.id}: the session ended early (exit {proc.returncode}) after "
            f"{len(chunks) - 2} of {len(commands)} commands\n--- output\n{proc.stdout}"
        ]
    if int(chunks[1].split("\n", 1)[0]) != 0:
        printed = chunks[0].removesuffix("\n")  # the marker's own newline
        return [f"{block.id}: the setup failed\n--- output\n{printed}"]
    ran = []
    for n, command in enumerate(commands):
        # chunks[n + 1] is " STATUS-OF-THE-PREVIOUS\n" + what command n printed + "\n".
        printed = chunks[n + 1].split("\n", 1)[1]
        status = int(chunks[n + 2].split("\n", 1)[0])
        ran.append(Ran(command, _lines(printed), status))
    return [p for r, nxt in zip(ran, [*ran[1:], None], strict=True) if (p := _check(block, r, nxt))]


def _lines(text: str) -> list[str]:
    """Lines printed before a marker (the marker starts with a newline of its own)."""
    text = text.removesuffix("\n").removesuffix("\n")
    return text.split("\n") if text else []


def _check(block: Block, ran: Ran, following: Ran | None) -> str | None:
    where = f"{block.doc}:{ran.command.line}: $ {ran.command.text}"
    shown = following is not None and following.command.text.strip() == "echo $?"
    if ran.status != 0 and not shown:
        return (
            f"{where}\nexited {ran.status} (a doc that shows a failing command follows it "
            "with `$ echo $?`)\n--- output\n" + "\n".join(ran.printed)
        )
    if output_matches(ran.command.expected, ran.printed):
        return None
    diff = difflib.unified_diff(
        list(ran.command.expected), ran.printed, "the doc", "the output", lineterm=""
    )
    return f"{where}\nthe output differs from the doc:\n" + "\n".join(diff)


def _bash(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    child = subprocess.Popen(
        ["bash", "--noprofile", "--norc", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        output, _ = child.communicate()
        output += f"\n[docs-test: killed after {timeout:.0f} s]\n"
    return subprocess.CompletedProcess(child.args, child.returncode, output)
