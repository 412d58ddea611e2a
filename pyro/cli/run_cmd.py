"""``pyro run``, ``pyro apply`` and ``pyro demo``: one-shot guests.

Human mode streams guest stdout/stderr to ours and writes phase markers to stderr
(contract §3); ``--json`` prints one RunResult document and nothing else on stdout.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pyro.cli.completion import environments
from pyro.cli.envflags import NO_BUILD_ENV, forced_env, no_build_option
from pyro.cli.errors import echo_json, handle_errors, json_option
from pyro.cli.flags import BACKENDS, MEMORY_MIB, RUN_FLAGS, TIMEOUT_SECONDS, VCPUS, flag_error
from pyro.cli.guest_command import GuestCommand
from pyro.cli.output import marker, quiet, verbose
from pyro.cli.progress import Live
from pyro.cli.stdin_flag import command_stdin, stdin_option
from pyro.cli.terminal import byte_writer, echo, is_tty
from pyro.cli.vars import parse_vars
from pyro.errors import PlanError, PyroError, SpecError, UsageError
from pyro.report.failure import EXIT_CANNOT_RUN

if TYPE_CHECKING:
    from pyro.execute.result import RunResult
    from pyro.spec.command import BackendName, CommandNetwork

NETWORKS = click.Choice(["off", "egress"])
#: A lone argument with any of these is a shell command line, not a program name.
SHELL_CHARS = re.compile(r"[\s;&|<>()$`\\\"'*?~]")
#: A plan file given to `pyro apply` is read up to this size (plans of 1 MiB specs are smaller).
MAX_PLAN_BYTES = 16 * 1024 * 1024


def _value(text: str) -> str:
    """``text`` as one ``key=value`` field: double-quoted (JSON) when it has spaces."""
    return json.dumps(text) if any(c.isspace() or c == '"' for c in text) else text


class Reporter:
    """Phase markers on stderr and guest output to stdout/stderr (human mode only).

    On a TTY, guest output and every guest-controlled text are cleaned of escape
    sequences and controls (:mod:`pyro.cli.terminal`); pipes and files get the bytes.
    A local environment build's phases show only on a TTY, as one live line with the
    time since the build started (:mod:`pyro.cli.progress`); :meth:`close` ends it.
    """

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._writers: dict[tuple[str, str], Callable[[bytes], None]] = {}
        self._live: Live | None = None

    def event(self, group: str, phase: str, fields: Mapping[str, str]) -> None:
        if self.as_json:
            return
        if phase == "building":
            if self._live is None and is_tty(sys.stderr) and not quiet():
                self._live = Live()
            if self._live is not None:
                self._live.build(fields.get("environment", ""), fields.get("step", ""))
            return
        self.close()
        if phase == "warning":  # a plan's warning: a sentence, shown even with -q
            echo(f"[{group}] warning: {fields.get('message', '')}", err=True)
            if fields.get("hint"):
                echo(f"[{group}] hint: {fields['hint']}", err=True)
            return
        extra = " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        marker(f"[{group}] phase={phase} {extra}".rstrip())

    def close(self) -> None:
        """End the live build line, if one is shown."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _write(self, stream: str, step_id: str, data: bytes) -> None:
        # One writer per step and stream: a sequence a step leaves open ends with it.
        writer = self._writers.get((stream, step_id))
        if writer is None:
            target = sys.stdout if stream == "stdout" else sys.stderr
            writer = self._writers[(stream, step_id)] = byte_writer(target)
        writer(data)

    def stdout(self, step_id: str, data: bytes) -> None:
        if not self.as_json:
            self._write("stdout", step_id, data)

    def stderr(self, step_id: str, data: bytes) -> None:
        if not self.as_json:
            self._write("stderr", step_id, data)

    def closing(self, result: RunResult) -> None:
        if self.as_json:
            return
        for step in result.steps:
            what = step.name or step.id
            if verbose():
                detail = step.message or (
                    f"exit code {step.exit_code}" if step.exit_code is not None else ""
                )
                marker(
                    f"[run] step={what} action={step.action} status={step.status} "
                    f"duration_ms={step.duration_ms} {detail}".rstrip()
                )
            elif step.status not in ("ok", "skipped"):
                message = step.message or f"exit code {step.exit_code}"
                marker(f"[run] step={what} status={step.status} {message}")
            if step.stdout_truncated or step.stderr_truncated:
                marker(f"[run] step={what} output truncated")
        if result.vm_kept:  # a VM left running is said even when quiet
            echo(f"[run] vm kept: vm_id={result.vm_id} (pyro vm delete {result.vm_id})", err=True)
        code = result.exit_code if result.exit_code is not None else "none"
        marker(
            f"[run] environment={result.environment} backend={result.backend} "
            f"exit_code={code} duration_ms={result.duration_ms}"
        )


@contextlib.contextmanager
def _in_flag_terms(command: str) -> Iterator[None]:
    """A spec error about what the command's flags put in its Run spec, as a flag error."""
    try:
        yield
    except SpecError as error:
        raise (flag_error(error, RUN_FLAGS, command) or error) from error


def _finish(result: RunResult, reporter: Reporter, junit: str | None) -> None:
    if junit:
        from pyro.cli.junit import write_junit

        write_junit(result, Path(junit))
    if reporter.as_json:
        echo_json(result.model_dump(mode="json"))
    else:
        reporter.closing(result)
    if result.error is not None and result.exit_code is None:
        error = result.error
        if not reporter.as_json:
            echo(f"error: {error['message']}", err=True)
            echo(f"hint: {error['hint']}", err=True)
        raise SystemExit(EXIT_CANNOT_RUN)
    raise SystemExit(result.exit_code or 0)


@contextlib.contextmanager
def _env_flags(cold: bool, no_build: bool = False) -> Iterator[None]:
    """``--cold`` (``PYRO_WARM=0``: pyro.vmm.snapshot.WARM_ENV) and ``--no-build`` for the body."""
    with forced_env("PYRO_WARM", "0", cold), forced_env(NO_BUILD_ENV, "1", no_build):
        yield


@click.command(cls=GuestCommand, context_settings={"allow_interspersed_args": True})
@click.argument("environment", shell_complete=environments)
@click.argument("command", nargs=-1, required=True)
@click.option("--vcpus", type=VCPUS, help="Guest vCPUs (default: the environment's).")
@click.option(
    "--memory-mib", type=MEMORY_MIB, help="Guest memory in MiB (default: the environment's)."
)
@click.option(
    "--timeout-seconds",
    type=TIMEOUT_SECONDS,
    default=600,
    show_default=True,
    help="Whole run, boot included.",
)
@click.option("--network", type=NETWORKS, default="off", show_default=True, help="Network policy.")
@click.option("--backend", type=BACKENDS, default=None, envvar="PYRO_BACKEND", help="VMM backend.")
@click.option(
    "--env", "env_items", multiple=True, metavar="K=V", help="Environment variable for the command."
)
@click.option(
    "--cold",
    is_flag=True,
    help="Boot the kernel even if a saved ready guest could be restored (sets PYRO_WARM=0).",
)
@stdin_option
@no_build_option
@json_option
@handle_errors
def run(
    environment: str,
    command: tuple[str, ...],
    vcpus: int | None,
    memory_mib: int | None,
    timeout_seconds: int,
    network: CommandNetwork,
    backend: BackendName | None,
    env_items: tuple[str, ...],
    cold: bool,
    stdin_flag: bool | None,
    no_build: bool,
    as_json: bool,
) -> None:
    """Run CMD in a fresh microVM of ENVIRONMENT, then delete the VM.

    Everything after `--` is the guest command. A single argument containing spaces or
    shell syntax runs with `sh -c`; otherwise the arguments are the argv. pyro's stdin is
    the command's when it is a file or a pipe (see --stdin).

    \b
    Examples:
      pyro run debian:12 -- git --version
      pyro run debian:12 -- 'echo $HOME && ls /'
      pyro run debian:12 -- sha256sum < big.iso
    """
    from pyro.sdk import Pyro

    argv: str | list[str] = list(command)
    if len(command) == 1 and SHELL_CHARS.search(command[0]):
        argv = command[0]
    env = {k: str(v) for k, v in (parse_vars(env_items, option="--env") or {}).items()}
    reporter = Reporter(as_json)
    with _env_flags(cold, no_build), _in_flag_terms("pyro run"), contextlib.closing(reporter):
        result = Pyro().run_in_vm(
            environment,
            argv,
            vcpus=vcpus,
            memory_mib=memory_mib,
            timeout_seconds=timeout_seconds,
            network=network,
            env=env,
            backend=None if backend == "auto" else backend,
            on_event=reporter.event,
            on_stdout=reporter.stdout,
            on_stderr=reporter.stderr,
            stdin=command_stdin(stdin_flag),
        )
    _finish(result, reporter, None)


@click.command(context_settings={"allow_interspersed_args": True})
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--var", "var_items", multiple=True, metavar="K=V", help="Template variable.")
@click.option(
    "--vars-file", type=click.Path(dir_okay=False), help="YAML/JSON mapping of variables."
)
@click.option("--run", "run_name", metavar="NAME", help="Which Run document of FILE to apply.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option(
    "--cold",
    is_flag=True,
    help="Boot the kernel even if a saved ready guest could be restored (sets PYRO_WARM=0).",
)
@click.option(
    "--on",
    "cluster",
    metavar="ray://HOST:PORT",
    envvar="PYRO_CLUSTER",
    help="Run on this Ray cluster's nodes (env PYRO_CLUSTER; docs/scale-out.md).",
)
@click.option(
    "--prepull",
    is_flag=True,
    help="With --on: every node that can run it pulls the environment before any run starts.",
)
@click.option(
    "--allow-tcg",
    is_flag=True,
    envvar="PYRO_CLUSTER_ALLOW_TCG",
    help="With --on: backend auto may run on nodes with only TCG emulation "
    "(env PYRO_CLUSTER_ALLOW_TCG=1).",
)
@no_build_option
@json_option
@handle_errors
def apply(
    file: str,
    var_items: tuple[str, ...],
    vars_file: str | None,
    run_name: str | None,
    junit: str | None,
    cold: bool,
    cluster: str | None,
    prepull: bool,
    allow_tcg: bool,
    no_build: bool,
    as_json: bool,
) -> None:
    """Plan the Run spec in FILE and carry it out on a real guest.

    FILE may also be a Plan document written by `pyro plan --json` (applied only if its
    pinned digests still match). A Run with a `matrix` runs every instance (as many at
    once as this host has start slots; with --on, on a cluster's nodes). Exit code: the
    failed step's, 124 on timeout, 0 on success, 125 when pyro itself failed; of a
    matrix, the worst instance's.
    """
    reporter = Reporter(as_json)
    if prepull and not cluster:
        raise UsageError(
            "--prepull warms a cluster's nodes; there is no cluster",
            "give --on ray://HOST:PORT (or set PYRO_CLUSTER), or drop --prepull",
        )
    if allow_tcg and not cluster and _given(click.get_current_context(), "allow_tcg"):
        raise UsageError(
            "--allow-tcg is about a cluster's nodes; there is no cluster",
            "give --on ray://HOST:PORT (or set PYRO_CLUSTER), or drop --allow-tcg "
            "(here backend auto already falls back to TCG)",
        )
    try:
        if _many(file, var_items, vars_file, run_name, cluster):
            from pyro.cli.many_cmd import apply_many

            variables = parse_vars(var_items, Path(vars_file) if vars_file else None)
            with _env_flags(cold, no_build):
                apply_many(file, variables, run_name, cluster, junit, as_json, prepull, allow_tcg)
        result = _apply(file, var_items, vars_file, run_name, cold, no_build, reporter)
    except PyroError as error:
        if junit:
            _write_error_junit(file, error, Path(junit))
        raise
    _finish(result, reporter, junit)


def _given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was written on the command line (not from its env var)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _many(
    file: str,
    var_items: tuple[str, ...],
    vars_file: str | None,
    run_name: str | None,
    cluster: str | None,
) -> bool:
    """Whether FILE is applied as many instances: a matrix Run, or any Run on a cluster
    (a Plan document is neither: it was planned for this host)."""
    from pyro.cli.many_cmd import is_many, mentions_matrix

    if not (cluster or mentions_matrix(file)):
        return False  # neither: nothing read twice
    if not isinstance(_read_plan_or_path(file), str):
        if cluster:
            raise UsageError(
                f"{file} is a Plan; a plan is made for the host it was planned on",
                "apply the Run spec itself with --on: each node plans it for itself",
            )
        return False
    variables = parse_vars(var_items, Path(vars_file) if vars_file else None)
    return bool(cluster) or is_many(file, variables, run_name)


def _apply(
    file: str,
    var_items: tuple[str, ...],
    vars_file: str | None,
    run_name: str | None,
    cold: bool,
    no_build: bool,
    reporter: Reporter,
) -> RunResult:
    from pyro.sdk import Pyro

    source: Any = _read_plan_or_path(file)
    variables = parse_vars(var_items, Path(vars_file) if vars_file else None)
    with _env_flags(cold, no_build), contextlib.closing(reporter):
        return Pyro().apply(
            source,
            vars=variables,
            run_name=run_name,
            on_event=reporter.event,
            on_stdout=reporter.stdout,
            on_stderr=reporter.stderr,
        )


def _read_plan_or_path(file: str) -> Any:
    """A Plan document from ``file`` (JSON written by `pyro plan --json`), else the path.

    Told apart by parsing, whatever the file's name: a JSON object whose ``kind`` is
    ``Plan`` is a plan; anything else is a spec, left to the spec loader (a spec in JSON
    is YAML too), which reports its own errors.
    """
    from pyro.plan.model import plan_from_json

    try:
        with open(file, "rb") as stream:
            raw = stream.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}", "check the path") from exc
    if not raw.lstrip().startswith(b"{"):
        return file  # not a JSON object: YAML, or nothing pyro can read
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(
            f"{file} is larger than {MAX_PLAN_BYTES} bytes", "apply a plan written by 'pyro plan'"
        )
    text = raw.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return file  # the spec loader says where the document is broken
    if isinstance(data, dict) and data.get("kind") == "Plan":
        return plan_from_json(text)
    return file


def _write_error_junit(file: str, error: PyroError, path: Path) -> None:
    """The report of a run that never started; a failure to write it is only a warning."""
    from pyro.cli.junit import render_error_junit, write_report

    try:
        write_report(render_error_junit(file, error), path)
    except PyroError as write_error:
        click.echo(f"warning: {write_error.summary}", err=True)


@click.command()
@json_option
@handle_errors
def demo(as_json: bool) -> None:
    """Run the packaged hello example on a real guest (pulls or builds debian:12 first)."""
    from importlib.resources import as_file, files

    from pyro.sdk import Pyro

    reporter = Reporter(as_json)
    started = time.monotonic()
    with (
        as_file(files("pyro.data") / "examples" / "hello.yaml") as path,
        contextlib.closing(reporter),
    ):
        result = Pyro().apply(
            path, on_event=reporter.event, on_stdout=reporter.stdout, on_stderr=reporter.stderr
        )
    if not as_json:
        marker(f"[demo] done in {time.monotonic() - started:.1f} s")
    _finish(result, reporter, None)
