"""The runnable blocks of pyro's Markdown docs and the ``docs-test`` markers before them.

``tests/e2e/test_docs_blocks.py`` runs every block this finds; ``docs/writing-docs.md`` is
the convention. Fences come from markdown-it-py (CommonMark), so a fence inside a list, a
longer or tilde fence, or a ```` ``` ```` inside another block is read as a renderer reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

#: Fence languages whose blocks are run.
RUN_LANGS = frozenset({"console", "shell", "sh", "bash", "python"})
#: Marker kinds; each is a comment ``<!-- docs-test: KIND ARG -->`` right before a fence.
KINDS = frozenset({"skip", "guest", "setup", "file"})

MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[a-z-]+)(?P<arg>.*?)\s*-->\s*$")
MENTION = re.compile(r"^\s*<!--\s*docs-test\b")


@dataclass(frozen=True)
class Marker:
    kind: str
    arg: str


@dataclass(frozen=True)
class Block:
    """One fenced block: ``line`` is the 1-based line of its opening fence."""

    doc: str
    line: int
    lang: str
    content: str
    markers: tuple[Marker, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS

    def marker(self, kind: str) -> Marker | None:
        return next((m for m in self.markers if m.kind == kind), None)

    @property
    def setup(self) -> list[str]:
        return [m.arg for m in self.markers if m.kind == "setup"]


@dataclass
class Doc:
    """The blocks of one Markdown file and what is wrong with its markers."""

    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_doc(text: str, doc: str) -> Doc:
    """Every fenced block of ``text`` with its markers; ``doc`` names the file in messages."""
    lines = text.splitlines()
    result = Doc()
    tokens = MarkdownIt("commonmark").parse(text)
    # Lines inside code blocks are content (e.g. a doc that shows how to write a marker).
    used = {
        n
        for t in tokens
        if t.type in ("fence", "code_block") and t.map
        for n in range(t.map[0], t.map[1])
    }
    for token in tokens:
        if token.type != "fence" or token.map is None:
            continue
        start = token.map[0]
        markers: list[Marker] = []
        above = start - 1
        while above >= 0 and above not in used and MENTION.search(lines[above]):
            used.add(above)
            marker, problem = _marker(lines[above], f"{doc}:{above + 1}")
            if problem:
                result.problems.append(problem)
            elif marker:
                markers.insert(0, marker)
            above -= 1
        lang = token.info.split()[0] if token.info.strip() else ""
        block = Block(doc, start + 1, lang, token.content, tuple(markers))
        result.problems.extend(_misuse(block))
        result.blocks.append(block)
    for number, line in enumerate(lines):
        if MENTION.search(line) and number not in used:
            result.problems.append(
                f"{doc}:{number + 1}: a docs-test marker must sit on the line(s) right before "
                "a fenced block"
            )
    return result


def load_docs(root: Path) -> dict[str, Doc]:
    """README.md and docs/*.md of the checkout at ``root``, by path relative to it."""
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return {
        str(p.relative_to(root)): parse_doc(p.read_text(), str(p.relative_to(root))) for p in paths
    }


def _marker(line: str, where: str) -> tuple[Marker | None, str | None]:
    found = MARKER.match(line)
    if not found:
        return (
            None,
            f"{where}: unreadable marker {line.strip()!r}; write <!-- docs-test: KIND ... -->",
        )
    kind, arg = found["kind"], found["arg"].strip()
    if kind not in KINDS:
        return (
            None,
            f"{where}: unknown docs-test marker {kind!r}; known: {', '.join(sorted(KINDS))}",
        )
    if kind == "skip":
        reason = re.fullmatch(r"\((.*)\)", arg, re.S)
        if reason is None or not reason[1].strip():
            return (
                None,
                f"{where}: 'skip' needs a reason: <!-- docs-test: skip (why it cannot run) -->",
            )
        arg = reason[1].strip()
    elif kind in ("setup", "file") and not arg:
        return None, f"{where}: {kind!r} needs an argument"
    elif kind == "guest" and arg:
        return None, f"{where}: 'guest' takes no argument (got {arg!r})"
    return Marker(kind, arg), None


def _misuse(block: Block) -> list[str]:
    problems = []
    if block.runs and block.marker("file"):
        problems.append(
            f"{block.id}: 'file' is for listings (yaml, json…), not a {block.lang} block"
        )
    if not block.runs:
        for marker in block.markers:
            if marker.kind != "file":
                problems.append(
                    f"{block.id}: {marker.kind!r} is for {'/'.join(sorted(RUN_LANGS))} blocks; "
                    f"this one is {block.lang or 'untagged'} and is not run"
                )
        if not block.lang and block.content.startswith("$ "):
            problems.append(
                f"{block.id}: an untagged block of commands; tag it ```console so it is run"
            )
    if block.marker("skip") and len(block.markers) > 1:
        problems.append(f"{block.id}: a skipped block takes no other marker")
    if block.lang == "console" and not block.marker("skip"):
        first = block.content.lstrip("\n").split("\n", 1)[0]
        if not first.startswith("$ "):
            problems.append(f"{block.id}: a console block starts with a '$ ' command line")
    return problems
