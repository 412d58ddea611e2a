"""Plain words for every field of every tool result, as a model reading ``tools/list`` needs them.

Pure data. Keys are a field name, or ``Model.field`` where one name means different things
in different results (``id``, ``name``, ``state``). A test builds every tool and fails
when a result field has no words here and none in its model.
"""

from __future__ import annotations

#: ``Model.field`` or ``field`` -> its description.
WORDS: dict[str, str] = {
    # Shared by several results.
    "exit_code": "Exit code (124: timed out).",
    "stdout": "Standard output.",
    "stderr": "Standard error.",
    "stdout_truncated": "stdout was cut at the size cap.",
    "stderr_truncated": "stderr was cut at the size cap.",
    "timed_out": "A timeout ended it.",
    "signal": "Signal that killed it, if any.",
    "duration_ms": "Time taken, ms.",
    "vm_id": "The VM's id.",
    "task_id": "The task's id.",
    "backend": "VMM: firecracker, qemu-kvm or qemu-tcg.",
    "vcpus": "Guest vCPUs.",
    "memory_mib": "Guest memory in MiB.",
    "labels": "Labels given at creation.",
    "created_at": "Created, Unix time.",
    "started_at": "Last boot, Unix time.",
    "uptime_s": "Seconds since boot.",
    "ttl_seconds": "Deleted this long after creation.",
    "pid": "VMM host pid while running.",
    "environment_digest": "Kernel and rootfs digest.",
    "deleted": "This call deleted the VM.",
    "warnings": "Things worth knowing.",
    # RunResult (vm_run, apply).
    "RunResult.ok": "Every step succeeded.",
    "RunResult.name": "The run's name.",
    "RunResult.plan_digest": "Digest of the plan run.",
    "RunResult.environment": "Environment name.",
    "RunResult.vm_id": "VM id (deleted unless vm_kept).",
    "RunResult.vm_kept": "The cleanup policy kept the VM.",
    "RunResult.exit_code": "0 if ok, else the failed command's code (124: timeout).",
    "RunResult.stdout": "stdout of the failed exec step, else the last.",
    "RunResult.stderr": "stderr of the failed exec step, else the last.",
    "RunResult.timed_out": "A timeout was reached.",
    "RunResult.failed_step": "Id of the step that failed.",
    "RunResult.error": "pyro's own error: type, message, hint.",
    "RunResult.duration_ms": "Whole run, ms.",
    "RunResult.steps": "Each step: id, action, name, status, exit_code, stdout, stderr, message.",
    "RunResult.artifacts_dir": "Host folder holding the artifacts.",
    # VMInfo (vm_create, vm_start, vm_stop, vm_status).
    "VMInfo.id": "VM id.",
    "VMInfo.kind": "vm or task.",
    "VMInfo.name": "Name given at creation.",
    "VMInfo.environment": "Environment name.",
    "VMInfo.state": "created, running or stopped.",
    "VMInfo.reason": "Why, in words.",
    "VMInfo.ephemeral": "Deleted after one use.",
    "VMInfo.network": "Network settings.",
    # ExecOutput, TaskExecOutput (vm_exec, task_exec).
    "TaskExecOutput.seq": "Command number in the journal.",
    "TaskExecOutput.deleted": "Always false.",
    "VMLogs.serial": "Serial console output.",
    "Deleted.id": "The id asked for.",
    "Deleted.deleted": "False when nothing by that id existed.",
    "VMList.vms": "Each VM as vm_status gives it.",
    # TaskInfo (task_create, task_status).
    "TaskInfo.id": "Task id.",
    "TaskInfo.name": "Name given at creation.",
    "TaskInfo.environment": "Environment name.",
    "TaskInfo.state": "created, running or stopped.",
    "TaskInfo.reason": "Why, in words.",
    "TaskInfo.idle_timeout_seconds": "Stopped after this long idle.",
    "TaskInfo.last_activity_at": "Last command, Unix time.",
    "TaskInfo.workspace": "Guest folder commands start in.",
    "TaskInfo.disk_bytes": "Host disk used, bytes.",
    "TaskInfo.command_count": "Commands run.",
    "TaskInfo.last_command": "Last command: seq, argv, exit_code.",
    "TaskInfo.secret_names": "Secret names (never values).",
    "TaskInfo.snapshots": "Snapshot names.",
    "TaskInfo.seed": "What seeded the workspace.",
    "TaskList.tasks": "Each task as task_status gives it.",
    "TaskLogs.entries": "Each command: seq, argv, exit_code, stdout, stderr.",
    # EnvironmentStatus (env_list, env_pull).
    "EnvList.environments": "Each environment: name, state, version, source.",
    "EnvironmentStatus.name": "Name, e.g. debian:12.",
    "EnvironmentStatus.state": "installed, invalid or not-installed.",
    "EnvironmentStatus.reason": "Why, in words.",
    "EnvironmentStatus.version": "Version.",
    "EnvironmentStatus.digest": "Kernel and rootfs digest.",
    "EnvironmentStatus.spec_digest": "Digest of its spec.",
    "EnvironmentStatus.source": "Registry reference.",
    "EnvironmentStatus.in_catalog": "In pyro's catalog.",
    "EnvironmentStatus.path": "Host install folder.",
    # SpecSummary (spec_validate).
    "SpecSummary.valid": "Always true.",
    "SpecSummary.kind": "Run or Environment.",
    "SpecSummary.name": "metadata.name.",
    # Plan (plan).
    "Plan.apiVersion": "Always pyro/v1.",
    "Plan.kind": "Always Plan.",
    "Plan.metadata": "The run's name.",
    "Plan.digest": "Digest of the plan.",
    "Plan.spec_dir": "Folder relative paths start in.",
    "Plan.applyable": "apply can carry it out.",
    "Plan.errors": "Why not applyable: message, hint.",
    "Plan.inventory": "What this host offers.",
    "Plan.environment": "Environment: name, origin, digest.",
    "Plan.resources": "vcpus and memory_mib.",
    "Plan.timeout_seconds": "Limit for the whole run.",
    "Plan.steps": "The steps in order, each with id and action; see pyro://schemas/plan.",
}


def words_for(model: str, field: str) -> str | None:
    """The description of ``field`` of result ``model``, if the glossary has one."""
    return WORDS.get(f"{model}.{field}") or WORDS.get(field)
