"""The ``vm_run`` and ``vm_*`` tools. Descriptions are written for the model choosing a tool."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context
from pydantic import Field

from pyro.errors import UsageError
from pyro.execute.result import RunResult
from pyro.mcp.calls import ToolGroup, in_thread
from pyro.mcp.results import Deleted, VMList
from pyro.mcp.roots import ClientRoots, mcp_root
from pyro.mcp.schema import RUN_SCHEMA_URI
from pyro.mcp.stdin import StdinArg, stdin_bytes
from pyro.mcp.stream import streaming
from pyro.mcp.tool import DESTRUCTIVE, READ_ONLY, RUNS, tool
from pyro.sdk.cancel import Cancellation
from pyro.sdk.vm import ExecOutput, VMInfo, VMLogs

Command = Annotated[
    str | list[str],
    Field(
        description="A shell command line (run with 'sh -c') or an argv list, "
        'e.g. "git --version && ls /" or ["uname", "-a"].'
    ),
]
Environment = Annotated[
    str, Field(description="Environment name (see env_list), e.g. 'debian:12'.")
]
#: Ids become host paths (records, locks) in pyro's state folder: only plain names pass.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
VmId = Annotated[str, Field(description="VM id (from vm_create).", pattern=ID_PATTERN)]
Vcpus = Annotated[int | None, Field(description="Guest vCPUs (default: the environment's).")]
MemoryMib = Annotated[
    int | None, Field(description="Guest memory in MiB (default: the environment's).")
]
Env = Annotated[dict[str, str] | None, Field(description="Environment variables for the command.")]
Network = Annotated[
    Literal["off", "egress"] | None,
    Field(description="'off' (default): no network. 'egress': outbound internet access."),
]
#: The ``spec`` argument: a plain object here; its JSON Schema is a resource.
SpecArg = Annotated[
    dict[str, Any] | None,
    Field(
        description="A Run spec document (the YAML as JSON) instead of environment + "
        f"command; JSON Schema: resource {RUN_SCHEMA_URI}."
    ),
]
Vars = Annotated[
    dict[str, Any] | None,
    Field(description="Values for '{{ vars.NAME }}' templates in the spec."),
]

DEFAULT_TIMEOUT_S = 600
T = TypeVar("T")


class VMTools(ToolGroup):
    """``vm_run`` and the VM lifecycle tools, over one :class:`pyro.Pyro`."""

    async def _call(
        self,
        work: Callable[[Cancellation], T],
        owned: Callable[[T], Iterable[str]] | None = None,
    ) -> T:
        return await in_thread(work, undo=self.sdk.delete_vm, owned=owned)

    @tool(RUNS, title="Run in a fresh microVM", profiles={"vm-run": 1, "task-core": 1, "full": 1})
    async def vm_run(
        self,
        environment: Annotated[
            str | None, Field(description="Environment name, e.g. 'debian:12' (see env_list).")
        ] = None,
        command: Annotated[
            str | list[str] | None,
            Field(description="Shell command line (run with 'sh -c') or an argv list."),
        ] = None,
        vcpus: Vcpus = None,
        memory_mib: MemoryMib = None,
        timeout_seconds: Annotated[
            int | None,
            Field(description="Limit for the whole run, boot included (default 600)."),
        ] = None,
        network: Network = None,
        env: Env = None,
        spec: SpecArg = None,
        vars: Vars = None,
        stdin: StdinArg = None,
        roots: ClientRoots = None,
        ctx: Context | None = None,
    ) -> RunResult:
        """Run a command in a fresh, isolated microVM and return its exit code, stdout and
        stderr. The VM is created, booted, used once and always deleted afterwards, so
        nothing leaks between calls. PREFER THIS TOOL: it is the right choice for almost
        every "run this safely" request.

        Give EITHER `environment` + `command` (optionally vcpus, memory_mib,
        timeout_seconds, network, env) OR `spec`: a full Run spec document (apiVersion
        pyro/v1, kind Run) for several steps, files or artifacts, with optional `vars`.
        Host paths in a spec must be inside the server's root folder (relative paths start
        there); artifacts are copied into a new folder the result names (artifacts_dir).
        Use task_* tools only when later calls must see files or state left by earlier
        ones. A command that fails still returns a result (ok=false, exit_code, stderr);
        exit code 124 means it timed out. exit_code, stdout and stderr are the command's
        (with a spec: the failed exec step's, else the last one's); while it runs, its
        output arrives as log messages (logger pyro.stdout/pyro.stderr).
        """
        report = self.reporter(ctx)
        flat = {
            "environment": environment,
            "command": command,
            "vcpus": vcpus,
            "memory_mib": memory_mib,
            "timeout_seconds": timeout_seconds,
            "network": network,
            "env": env,
            "stdin": stdin,
        }
        given = sorted(name for name, value in flat.items() if value is not None)
        if spec is not None:
            if given:
                raise UsageError(
                    f"vm_run got both 'spec' and {', '.join(given)}",
                    "give either a full Run spec in 'spec', or 'environment' and 'command' "
                    "(put resources, timeout and network inside the spec)",
                )
            document = spec

            def apply(token: Cancellation) -> RunResult:
                with streaming(report) as out:
                    return self.sdk.confined(mcp_root(roots)).apply(
                        document,
                        vars=vars or {},
                        on_event=report.events(token.on_event),
                        on_stdout=lambda _step, data: out.stdout(data),
                        on_stderr=lambda _step, data: out.stderr(data),
                        on_step=report.step,
                        on_pull=report.pull,
                    )

            return await self._call(apply)
        if environment is None or command is None:
            missing = " and ".join(n for n in ("environment", "command") if flat[n] is None)
            raise UsageError(
                f"vm_run needs {missing}",
                "give 'environment' and 'command' (e.g. 'debian:12' and 'uname -a'), "
                "or a full Run spec in 'spec'",
            )
        if vars is not None:
            raise UsageError("'vars' only applies to a 'spec'", "drop 'vars', or pass a 'spec'")
        data = stdin_bytes(stdin)

        def work(token: Cancellation) -> RunResult:
            with streaming(report) as out:
                return self.sdk.confined(mcp_root(roots)).run_in_vm(
                    environment,
                    command,
                    vcpus=vcpus,
                    memory_mib=memory_mib,
                    timeout_seconds=timeout_seconds or DEFAULT_TIMEOUT_S,
                    network=network or "off",
                    env=env,
                    on_event=report.events(token.on_event),
                    on_stdout=lambda _step, data: out.stdout(data),
                    on_stderr=lambda _step, data: out.stderr(data),
                    on_step=report.step,
                    on_pull=report.pull,
                    stdin=data,
                )

        return await self._call(work)

    @tool(RUNS, title="Create a VM", profiles={"full": 2})
    async def vm_create(
        self,
        environment: Environment,
        vcpus: Vcpus = None,
        memory_mib: MemoryMib = None,
        ttl_seconds: Annotated[
            int | None, Field(description="Delete the VM automatically this long after creation.")
        ] = None,
        name: Annotated[str | None, Field(description="A name to recognise it by.")] = None,
        roots: ClientRoots = None,
    ) -> VMInfo:
        """Create a VM (not started) and return its id. Only for multi-step work on one VM;
        for one command prefer vm_run. Then vm_start, vm_exec (which DELETES the VM after
        its command), or vm_delete when done. Prefer task_create when you need to run
        several commands that share files.
        """
        return await self._call(
            lambda token: self.sdk.confined(mcp_root(roots)).create_vm(
                environment, vcpus=vcpus, memory_mib=memory_mib, ttl_seconds=ttl_seconds, name=name
            ),
            owned=lambda info: [info.id],
        )

    @tool(RUNS, title="Start a VM", profiles={"full": 3})
    async def vm_start(self, vm_id: VmId) -> VMInfo:
        """Boot a created or stopped VM and wait until it is ready for vm_exec."""
        return await self._call(lambda token: self.sdk.start_vm(vm_id))

    @tool(DESTRUCTIVE, title="Run one command in a VM, then delete it", profiles={"full": 4})
    async def vm_exec(
        self,
        vm_id: VmId,
        command: Command,
        timeout_seconds: Annotated[
            int, Field(description="Limit for the command; exit code 124 when reached.")
        ] = DEFAULT_TIMEOUT_S,
        env: Env = None,
        cwd: Annotated[str | None, Field(description="Working directory in the guest.")] = None,
    ) -> ExecOutput:
        """Run ONE command in a VM (starting it if needed) and then DELETE the VM, also when
        the command fails. To keep state across several commands use task_create +
        task_exec instead.
        """

        def work(token: Cancellation) -> ExecOutput:
            token.track(vm_id)  # the VM goes either way; cancelling just ends it sooner
            return self.sdk.exec_vm(
                vm_id, command, timeout_seconds=timeout_seconds, env=env, cwd=cwd
            )

        return await self._call(work)

    @tool(DESTRUCTIVE, title="Stop a VM", profiles={"full": 5}, idempotent=True)
    async def vm_stop(self, vm_id: VmId) -> VMInfo:
        """Shut a running VM down, keeping its disk so vm_start can boot it again."""
        return await self._call(lambda token: self.sdk.stop_vm(vm_id))

    @tool(DESTRUCTIVE, title="Delete a VM", profiles={"full": 6}, idempotent=True)
    async def vm_delete(self, vm_id: VmId) -> Deleted:
        """Kill a VM if running and remove it with its disk. Deleting a missing VM reports
        deleted=false.
        """
        deleted = await self._call(lambda token: self.sdk.delete_vm(vm_id))
        return Deleted(id=vm_id, deleted=bool(deleted))

    @tool(READ_ONLY, title="VM status", profiles={"full": 7})
    async def vm_status(self, vm_id: VmId) -> VMInfo:
        """State (created, running, stopped, …), resources, backend and uptime of a VM."""
        return await self._call(lambda token: self.sdk.status_vm(vm_id))

    @tool(READ_ONLY, title="VM console log", profiles={"full": 8})
    async def vm_logs(
        self,
        vm_id: VmId,
        tail: Annotated[
            int | None, Field(description="Only the last N lines (default: all).")
        ] = None,
    ) -> VMLogs:
        """The guest's serial console log: useful when a VM failed to boot. Also the
        resource pyro://vms/{vm_id}/console.
        """
        return await self._call(lambda token: self.sdk.logs_vm(vm_id, tail=tail))

    @tool(READ_ONLY, title="List VMs", profiles={"full": 9})
    async def vm_list(self) -> VMList:
        """Every VM created with vm_create that still exists (not tasks), oldest first."""
        return VMList(vms=await self._call(lambda token: self.sdk.list_vms()))
