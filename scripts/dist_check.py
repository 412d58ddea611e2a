#!/usr/bin/env python3
"""``make dist-check``: build the sdist and wheel, check them, and smoke-test the wheel alone.

1. ``python -m build`` (sdist, then the wheel *from the sdist*) into a temp dir.
2. ``twine check`` both, and check their member lists: every file of the ``pyro`` package in
   the checkout is in both; the sdist holds no symlinks or hard links.
3. A fresh venv outside the checkout gets the wheel (dependencies from the package index).
4. Smoke on the default path, from a cwd outside the checkout, with ``PYTHONSAFEPATH=1``,
   fresh ``PYRO_CACHE_DIR``/``PYRO_STATE_DIR`` and a PATH without the dev venv:
   ``pyro --version``, ``doctor --json``, ``env list``, ``validate`` + ``schema run --output``
   + ``plan`` of the packaged hello example, and — when a backend can run guests and
   debian:12 is installed in the developer's cache — ``env pull debian:12`` from a local
   registry (filled with ``pyro env push`` first), ``env inspect debian:12``,
   ``run debian:12 -- git --version`` and ``demo`` (the hello example, read from pyro's
   package data).
5. Fails if any smoke process opened a path in the checkout: an audit hook (a
   ``sitecustomize`` in the smoke venv) records Python's own opens, imports and child
   processes; ``strace -f`` (when installed) records every process's file system calls.

Exit status 0 when everything passed. ``--keep`` keeps the temp dir for a post-mortem.
Environment: ``PYRO_DIST_GUEST=0`` skips the guest part; ``CI`` set makes a missing
debian:12 a failure instead of a skip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the registry helper the tests use

from helpers.registry import BINARY as REGISTRY_BINARY  # noqa: E402
from helpers.registry import Registry  # noqa: E402

from pyro.__about__ import CATALOG_VERSION, __version__  # noqa: E402

DIST_NAME = "pyro_vm"
ENVIRONMENT = "debian:12"
# Files the runtime reads through importlib.resources; checked by name so an empty walk of
# the source tree cannot make the check pass vacuously.
REQUIRED_PACKAGE_FILES = (
    "pyro/__about__.py",
    "pyro/py.typed",
    "pyro/data/environments/__init__.py",
    "pyro/data/environments/debian-12.yaml",
    "pyro/data/environments/kernels/pyro-6.1.config",
    "pyro/data/examples/hello.yaml",
    "pyro/data/schemas/run.schema.json",
    "pyro/data/schemas/environment.schema.json",
    "pyro/guest/agent/agent.h",
    "pyro/guest/agent/main.c",
)
REQUIRED_SDIST_FILES = ("PKG-INFO", "pyproject.toml", "README.md", "LICENSE", "docs/install.md")

# Imported by every Python process of the smoke venv. Records (never blocks) any open,
# directory listing, chdir, import search path or child-process cwd under $PYRO_DIST_FORBID.
SITECUSTOMIZE = """\
import os
import sys

_FORBID = os.environ.get("PYRO_DIST_FORBID", "")
_LOG = os.environ.get("PYRO_DIST_AUDIT_LOG", "")
_EVENTS = {"open": 0, "os.listdir": 0, "os.scandir": 0, "os.chdir": 0, "subprocess.Popen": 2}


def _install():
    roots = tuple(r.rstrip(os.sep) + os.sep for r in _FORBID.split(os.pathsep) if r)
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    busy = []

    def under(value):
        if value is None or isinstance(value, int):
            return None
        try:
            path = os.path.realpath(os.path.abspath(os.fsdecode(value)))
        except (TypeError, ValueError, OSError):
            return None
        return path if (path + os.sep).startswith(roots) else None

    def record(event, path):
        os.write(fd, f"{os.getpid()} {event} {path}\\n".encode(errors="replace"))

    def hook(event, args):
        if busy or event not in _EVENTS and event != "import":
            return
        busy.append(1)
        try:
            if event == "import":
                for entry in args[2] or ():
                    hit = under(entry)
                    if hit:
                        record("sys.path", hit)
            else:
                hit = under(args[_EVENTS[event]] if args else None)
                if hit:
                    record(event, hit)
        finally:
            busy.pop()

    for entry in sys.path:
        hit = under(entry)
        if hit:
            record("sys.path", hit)
    sys.addaudithook(hook)


if _FORBID and _LOG:
    _install()
"""


class CheckFailed(Exception):
    """One check of the dist-check failed; the message says which and why."""


def say(message: str) -> None:
    print(f"[dist-check] {message}", flush=True)


def run(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run cmd, capture its output; CheckFailed with the output's tail if it fails."""
    argv = [str(c) for c in cmd]
    proc = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise CheckFailed(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return proc


# -- build and inspect -----------------------------------------------------------------------


def build(out: Path) -> tuple[Path, Path]:
    run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd=REPO)
    sdists = sorted(out.glob(f"{DIST_NAME}-*.tar.gz"))
    wheels = sorted(out.glob(f"{DIST_NAME}-*-py3-none-any.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise CheckFailed(f"expected one sdist and one wheel in {out}, found {os.listdir(out)}")
    for path in (*sdists, *wheels):
        if f"-{__version__}" not in path.name:
            raise CheckFailed(f"{path.name} does not carry the version {__version__}")
    return sdists[0], wheels[0]


def package_files() -> list[str]:
    """Every file of the pyro package in the checkout (what both archives must hold)."""
    found = []
    for path in sorted((REPO / "pyro").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            found.append(path.relative_to(REPO).as_posix())
    missing = [f for f in REQUIRED_PACKAGE_FILES if f not in found]
    if missing:
        raise CheckFailed(f"the checkout lacks files the runtime needs: {missing}")
    return found


def check_wheel(wheel: Path, expected: list[str]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{DIST_NAME}-{__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    missing = [f for f in expected if f not in names]
    if missing:
        raise CheckFailed(f"the wheel lacks {len(missing)} package files: {missing[:10]}")
    stray = sorted(n for n in names if not n.startswith(("pyro/", f"{info}/")))
    if stray:
        raise CheckFailed(f"the wheel holds files outside the package: {stray[:10]}")
    if "pyro = pyro.cli.main:entry" not in entry_points:
        raise CheckFailed("the wheel does not declare the 'pyro' console script")
    if f"{info}/licenses/LICENSE" not in names:
        raise CheckFailed("the wheel does not carry the LICENSE file pyproject.toml names")


def check_sdist(sdist: Path, expected: list[str]) -> None:
    prefix = f"{DIST_NAME}-{__version__}/"
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
    links = [m.name for m in members if m.issym() or m.islnk()]
    if links:
        raise CheckFailed(f"the sdist holds links, not real files: {links}")
    names = {m.name.removeprefix(prefix) for m in members if m.isfile()}
    missing = [f for f in (*expected, *REQUIRED_SDIST_FILES) if f not in names]
    if missing:
        raise CheckFailed(f"the sdist lacks {len(missing)} files: {missing[:10]}")


# -- the smoke venv --------------------------------------------------------------------------


def make_venv(
    venv: Path,
    wheel: Path,
    *,
    prefix: Sequence[str | Path] = (),
    env: dict[str, str] | None = None,
) -> Path:
    """A fresh venv with only the wheel (and its dependencies); returns its bin dir.

    ``prefix`` runs each command under another command (e.g. ``setpriv`` to another user:
    tests/e2e/test_ci_runner.py); ``env`` replaces :func:`clean_env` for them.
    """
    base = getattr(sys, "_base_executable", sys.executable)
    bin_dir = venv / "bin"
    env = env if env is not None else clean_env(bin_dir)
    run([*prefix, base, "-m", "venv", venv], env=env)
    run(
        [*prefix, bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-compile", wheel],
        env=env,
        cwd=venv,
    )
    purelib = run(
        [
            *prefix,
            bin_dir / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        env=env,
        cwd=venv,
    ).stdout.strip()
    (Path(purelib) / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return bin_dir


def clean_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment minus anything that could point back into the checkout."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYRO_ENV_REGISTRY")
    # PWD too: a shell started by pyro (e.g. musl-gcc is a sh script) stats $PWD.
    drop += ("PWD", "OLDPWD")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/local/sbin", "/usr/local/bin"])
    env["PATH"] += os.pathsep + "/usr/sbin:/usr/bin:/sbin:/bin"
    env.update(extra)
    return env


def _working_strace() -> str | None:
    """strace, if installed, wanted and allowed to trace here (containers may forbid ptrace)."""
    strace = shutil.which("strace")
    if strace is None or os.environ.get("PYRO_DIST_STRACE") == "0":
        return None
    probe = [strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=%file", "-o", os.devnull, "true"]
    done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        say(f"strace cannot trace here ({done.stderr.decode(errors='replace').strip()[:200]})")
        return None
    return strace


class Smoke:
    """Runs the installed pyro the way a user would, recording what it touches."""

    def __init__(self, bin_dir: Path, work: Path) -> None:
        self.bin_dir = bin_dir
        self.cwd = work / "cwd"
        self.cwd.mkdir()
        self.audit_log = work / "audit.log"
        self.trace_dir = work / "strace"
        self.trace_dir.mkdir()
        self.strace = _working_strace()
        forbid = {str(REPO), os.path.realpath(REPO)}
        self.env = clean_env(
            bin_dir,
            PYTHONSAFEPATH="1",
            PYRO_CACHE_DIR=str(work / "cache"),
            PYRO_STATE_DIR=str(work / "state"),
            TMPDIR=str(work / "tmp"),
            PWD=str(self.cwd),
            PYRO_DIST_FORBID=os.pathsep.join(sorted(forbid)),
            PYRO_DIST_AUDIT_LOG=str(self.audit_log),
        )
        (work / "tmp").mkdir()
        self.count = 0

    def pyro(self, *args: str, timeout: float = 600, **extra: str) -> str:
        self.count += 1
        cmd: list[str | Path] = [self.bin_dir / "pyro", *args]
        if self.strace:
            trace = self.trace_dir / f"{self.count:02d}.trace"
            cmd = [self.strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=%file,chdir"]
            cmd += ["-o", trace, self.bin_dir / "pyro", *args]
        started = time.monotonic()
        proc = run(cmd, env={**self.env, **extra}, cwd=self.cwd, timeout=timeout)
        say(f"  pyro {' '.join(args)}  ({time.monotonic() - started:.1f} s)")
        return proc.stdout

    def python(self, code: str) -> str:
        return run([self.bin_dir / "python", "-c", code], env=self.env, cwd=self.cwd).stdout

    def touched_checkout(self) -> list[str]:
        """Every recorded access to a path in the checkout (audit hook and strace)."""
        hits = self.audit_log.read_text().splitlines() if self.audit_log.exists() else []
        roots = {str(REPO), os.path.realpath(REPO)}
        for trace in sorted(self.trace_dir.glob("*.trace")):
            lines = trace.read_text(errors="replace").splitlines()
            hits += [f"{trace.name}: {line}" for line in strace_hits(lines, roots)]
        return hits


def strace_hits(lines: Sequence[str], roots: set[str]) -> list[str]:
    """The strace lines naming a path that is one of ``roots`` or inside one."""
    needles = [f'"{root.rstrip("/")}' for root in roots]
    return [
        line.strip() for line in lines if any(n + "/" in line or n + '"' in line for n in needles)
    ]


def smoke_default_path(smoke: Smoke) -> dict[str, object]:
    version = smoke.pyro("--version").strip()
    if __version__ not in version or f"catalog {CATALOG_VERSION}" not in version:
        raise CheckFailed(f"pyro --version printed {version!r}, want {__version__} and catalog")
    doctor = json.loads(smoke.pyro("doctor", "--json"))
    listed = smoke.pyro("env", "list")
    if ENVIRONMENT not in listed:
        raise CheckFailed(f"'pyro env list' does not show {ENVIRONMENT}:\n{listed}")
    example = smoke.python(
        "import importlib.resources as r; "
        "print(r.files('pyro.data').joinpath('examples/hello.yaml').read_text(), end='')"
    )
    (smoke.cwd / "hello.yaml").write_text(example)
    smoke.pyro("validate", "hello.yaml")
    # The editor schema the example's modeline names, from the wheel alone (no schemas/).
    smoke.pyro("schema", "run", "--output", ".pyro/run.schema.json")
    written = json.loads((smoke.cwd / ".pyro" / "run.schema.json").read_text())
    if written.get("$schema") != "http://json-schema.org/draft-07/schema#":
        raise CheckFailed(f"'pyro schema run' wrote a {written.get('$schema')} schema")
    plan = smoke.pyro("plan", "hello.yaml")
    if ENVIRONMENT not in plan:
        raise CheckFailed(f"'pyro plan hello.yaml' does not mention {ENVIRONMENT}:\n{plan}")
    return dict(doctor)


def developer_install(bin_dir: Path) -> bool:
    """Whether debian:12 is installed and valid in the developer's own cache."""
    env = clean_env(bin_dir)
    out = run([bin_dir / "pyro", "env", "inspect", ENVIRONMENT, "--json"], env=env).stdout
    return bool(json.loads(out)["environment"]["state"] == "installed")


def smoke_guest(smoke: Smoke, work: Path) -> None:
    registry = Registry(work / "registry")
    registry.start()
    try:
        started = time.monotonic()
        ref = registry.ref("pyro/debian", "12")
        # The push reads the developer's cache: setup, not part of what is audited.
        run([smoke.bin_dir / "pyro", "env", "push", ENVIRONMENT, ref], env=clean_env(smoke.bin_dir))
        say(f"  pushed {ENVIRONMENT} to {ref} ({time.monotonic() - started:.1f} s)")
        source = f"{registry.address}/pyro"
        smoke.pyro("env", "pull", ENVIRONMENT, PYRO_ENV_REGISTRY=source)
        details = json.loads(smoke.pyro("env", "inspect", ENVIRONMENT, "--json"))["environment"]
        if details["state"] != "installed" or not str(details["source"]).startswith(
            f"oci://{source}/"
        ):
            raise CheckFailed(f"after the pull, inspect says {details}")
        out = smoke.pyro("run", ENVIRONMENT, "--", "git", "--version", timeout=300)
        if "git version" not in out:
            raise CheckFailed(f"'pyro run {ENVIRONMENT} -- git --version' printed {out!r}")
        # The hello example again, this time read by pyro itself from its package data.
        out = smoke.pyro("demo", timeout=300)
        if "hello from pyro" not in out:
            raise CheckFailed(f"'pyro demo' printed {out!r}")
    finally:
        registry.kill()


def guest_skip_reason(doctor: dict[str, object], bin_dir: Path) -> str | None:
    if os.environ.get("PYRO_DIST_GUEST") == "0":
        return "PYRO_DIST_GUEST=0"
    if not doctor.get("selected_backend"):
        return "no backend can run guests here (pyro doctor)"
    if shutil.which(REGISTRY_BINARY) is None:
        return f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)"
    if not developer_install(bin_dir):
        return f"{ENVIRONMENT} is not installed in your cache (make environments)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pyro-dist-check-")).resolve()
    if work.is_relative_to(REPO.resolve()):
        say(f"FAIL: the temp dir {work} is inside the checkout; set TMPDIR elsewhere")
        return 1
    started = time.monotonic()
    smoke: Smoke | None = None
    try:
        sdist, wheel = build(work / "dist")
        say(f"built {sdist.name} and {wheel.name} ({time.monotonic() - started:.1f} s)")
        run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel])
        expected = package_files()
        check_wheel(wheel, expected)
        check_sdist(sdist, expected)
        say(f"twine check and contents: ok ({len(expected)} package files in each)")
        mark = time.monotonic()
        bin_dir = make_venv(work / "venv", wheel)
        say(f"installed the wheel into {work / 'venv'} ({time.monotonic() - mark:.1f} s)")
        smoke = Smoke(bin_dir, work)
        say(f"smoke from {smoke.cwd} (strace: {'yes' if smoke.strace else 'no'}):")
        doctor = smoke_default_path(smoke)
        skip = guest_skip_reason(doctor, bin_dir)
        if skip is None:
            smoke_guest(smoke, work)
        elif os.environ.get("CI"):
            raise CheckFailed(f"cannot run the guest smoke: {skip}")
        else:
            say(f"  SKIP guest smoke (pull, inspect, run): {skip}")
        touched = smoke.touched_checkout()
        if touched:
            listing = "\n".join(touched[:20])
            raise CheckFailed(f"the installed pyro read from the checkout {REPO}:\n{listing}")
        say(f"no access to {REPO} from {smoke.count} pyro commands")
    except (CheckFailed, subprocess.TimeoutExpired, RuntimeError) as exc:
        say(f"FAIL: {exc}")
        say(f"kept {work} for a look" if args.keep else "rerun with --keep to keep the temp dir")
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    say(f"PASS in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
