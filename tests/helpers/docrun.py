"""Run one docs block as a reader would and say how its output differs from the doc.

``console`` blocks: every ``$ cmd`` runs in one bash session; the lines after it are its
expected output, matched against stdout and stderr (a terminal interleaves the two, so the
order is checked within each stream). ``sh``/``bash``/``shell`` blocks are scripts run with
``bash -e -o pipefail``, ``python`` blocks programs run by the checkout's ``python3``; only
their exit status counts.
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


def output_matches(expected: tuple[str, ...], stdout: list[str], stderr: list[str]) -> bool:
    """Whether ``expected`` is a terminal's view of the two streams (``...`` lines are gaps)."""
    items: list[re.Pattern[str] | None] = [
        None if e.strip() in ELLIPSES else _line_pattern(e) for e in expected
    ]
    out = [normalise(x) for x in stdout]
    err = [normalise(x) for x in stderr]
    n_out, n_err = len(out), len(err)
    # ok[e][i][j]: items[e:] match out[i:] and err[j:] — filled from the end.
    ok = [[[False] * (n_err + 1) for _ in range(n_out + 1)] for _ in range(len(items) + 1)]
    ok[len(items)][n_out][n_err] = True
    for e in range(len(items) - 1, -1, -1):
        item = items[e]
        for i in range(n_out, -1, -1):
            for j in range(n_err, -1, -1):
                if item is None:
                    ok[e][i][j] = (
                        ok[e + 1][i][j]
                        or (i < n_out and ok[e][i + 1][j])
                        or (j < n_err and ok[e][i][j + 1])
                    )
                else:
                    ok[e][i][j] = bool(
                        (i < n_out and item.fullmatch(out[i]) and ok[e + 1][i + 1][j])
                        or (j < n_err and item.fullmatch(err[j]) and ok[e + 1][i][j + 1])
                    )
    return ok[0][0][0]


@dataclass(frozen=True)
class Ran:
    """What one command printed and its exit status."""

    command: Command
    stdout: list[str]
    stderr: list[str]
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
    return {**base, "PATH": path, "PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"}


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
        return [
            f"{block.id}: the script exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
        ]
    return []


def run_console(block: Block, cwd: Path, env: dict[str, str], timeout: float) -> list[str]:
    commands = parse_console(block)
    mark = f"@@docs-test-{uuid.uuid4().hex}@@"
    parts = [
        *block.setup,
        f'__docs_rc=$?; printf "\\n{mark} %d\\n" $__docs_rc; printf "\\n{mark}\\n" >&2',
    ]
    for command in commands:
        parts += [
            command.text,
            f'__docs_rc=$?; printf "\\n{mark} %d\\n" $__docs_rc; printf "\\n{mark}\\n" >&2; '
            "(exit $__docs_rc)",
        ]
    proc = _bash(["-c", "\n".join(parts)], cwd, env, timeout)
    outs = proc.stdout.split(mark)
    errs = proc.stderr.split(mark)
    if len(outs) != len(commands) + 2 or len(errs) != len(commands) + 2:
        return [
            f"{block.id}: the session ended early (exit {proc.returncode}) after "
            f"{len(outs) - 2} of {len(commands)} commands\n"
            f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
        ]
    setup_status = int(outs[1].split("\n", 1)[0])
    if setup_status != 0:
        return [f"{block.id}: the setup failed\n--- stdout\n{outs[0]}--- stderr\n{errs[0]}"]
    ran = []
    for n, command in enumerate(commands):
        status_line, _, _ = outs[n + 2].partition("\n")
        tail_out = outs[n + 1].split("\n", 1)[1] if "\n" in outs[n + 1] else ""
        ran.append(
            Ran(command, _lines(tail_out), _lines(errs[n + 1].removeprefix("\n")), int(status_line))
        )
    return [p for r, nxt in zip(ran, [*ran[1:], None], strict=True) if (p := _check(block, r, nxt))]


def _lines(text: str) -> list[str]:
    """Lines printed between two markers (each marker starts with a newline of its own)."""
    text = text.removesuffix("\n").removesuffix("\n")
    return text.split("\n") if text else []


def _check(block: Block, ran: Ran, following: Ran | None) -> str | None:
    where = f"{block.doc}:{ran.command.line}: $ {ran.command.text}"
    shown = following is not None and following.command.text.strip() == "echo $?"
    if ran.status != 0 and not shown:
        return (
            f"{where}\nexited {ran.status} (a doc that shows a failing command follows it "
            f"with `$ echo $?`)\n--- stdout\n"
            + "\n".join(ran.stdout)
            + "\n--- stderr\n"
            + "\n".join(ran.stderr)
        )
    if output_matches(ran.command.expected, ran.stdout, ran.stderr):
        return None
    diff = difflib.unified_diff(
        list(ran.command.expected),
        [*ran.stdout, *(["--- (stderr)"] if ran.stderr else []), *ran.stderr],
        "the doc",
        "the output (stdout, then stderr)",
        lineterm="",
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
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        stdout, stderr = child.communicate()
        stderr += f"\n[docs-test: killed after {timeout:.0f} s]\n"
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
