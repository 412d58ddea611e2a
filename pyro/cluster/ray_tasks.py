"""Task workspaces on a Ray cluster: one actor per node owns the tasks placed there
(Ray itself comes through :mod:`pyro.cluster.ray_exec`, its one importer).

:class:`ClusterTasks` is what ``Pyro(cluster="ray://…")`` routes its task methods
through. A new task goes to an alive node offering the resource its backend needs
(:mod:`pyro.cluster.nodes`), the one holding the fewest of this client's tasks; that
node's actor (:class:`pyro.cluster.task_host.TaskHost`, made on first use, pinned to the
node) creates and owns it, and every later call naming the task goes to that actor.
An actor holds no Ray resource (a waiting workspace must not block runs); its tasks'
guests take the node's start slots like any other. When the actor or its node dies, a
call fails with :class:`~pyro.errors.StateError` naming the task and the node, within
Ray's failure detection (a call that is not a command also within :data:`CALL_TIMEOUT_S`).
Closing deletes every task (each actor's ``close``), then has every pyro node delete
what a killed actor left.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyro.cluster.ray_exec import _init, _ray, on_node
from pyro.errors import PlanError, PyroError, StateError

#: How long a call other than a command (and create) may take before it is given up.
CALL_TIMEOUT_S = 120.0
#: Creating boots a guest (a cold boot under emulation, or a pull first).
CREATE_TIMEOUT_S = 900.0
#: A task id as a node may report it (it becomes a routing key on this side).
_TASK_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def malformed(what: str, where: str, detail: str) -> PyroError:
    """A node's reply that breaks its own rules (a node is not trusted: docs/security.md)."""
    return PyroError(
        f"{what}: node {where} answered with {detail}",
        "the node is broken or hostile; nothing of its answer was used",
    )


@dataclass
class _Node:
    node_id: str
    address: str
    actor: Any
    tasks: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"{self.address} ({self.node_id[:12]})"


class ClusterTasks:
    """The tasks one client placed on a cluster, each routed to its node's actor."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._ray: Any = None
        self._joined = False  # this object joined the cluster (and leaves it on close)
        self._nodes: dict[str, _Node] = {}
        self._where: dict[str, _Node] = {}

    def _connect(self) -> Any:
        if self._ray is None:
            ray = _ray()
            self._joined = _init(ray, self._address)
            import atexit

            atexit.register(self.close)  # before Ray's own exit handler leaves the cluster
            self._ray = ray
        return self._ray

    def _place(self, resource: str) -> _Node:
        """This client's actor on the alive node offering ``resource`` with fewest tasks."""
        from pyro.cluster.nodes import placement_problems

        ray = self._connect()
        nodes = ray.nodes()
        problems = placement_problems([resource], nodes)
        if problems:
            raise PlanError(
                "no cluster node can hold this task: " + "; ".join(problems),
                "join nodes with the resources 'pyro cluster resources' prints on each, "
                "or name a backend the nodes offer",
            )
        offering = [
            node
            for node in nodes
            if node.get("Alive") and node.get("Resources", {}).get(resource, 0) >= 1
        ]
        chosen = min(
            offering,
            key=lambda n: len(self._nodes[n["NodeID"]].tasks) if n["NodeID"] in self._nodes else 0,
        )
        node_id = str(chosen["NodeID"])
        if node_id not in self._nodes:
            from pyro.cluster.task_host import TaskHost

            actor = (
                ray.remote(TaskHost)
                .options(
                    num_cpus=0,
                    max_restarts=0,
                    max_concurrency=8,  # a long command must not hold up a status call
                    scheduling_strategy=on_node(node_id),
                )
                .remote()
            )
            address = str(chosen.get("NodeManagerAddress", "?"))
            self._nodes[node_id] = _Node(node_id, address, actor)
        return self._nodes[node_id]

    def node_of(self, task_id: str) -> _Node:
        """The node holding ``task_id``.

        Raises:
            NotFoundError: this client placed no such task.
        """
        from pyro.errors import NotFoundError

        node = self._where.get(task_id)
        if node is None:
            raise NotFoundError(
                f"task {task_id} is not one this client placed on the cluster",
                "a cluster task is reached through the Pyro(cluster=…) that created it",
            )
        return node

    def where(self, task_id: str) -> dict[str, Any]:
        """The node (``node``), its task actor's process id (``pid``) and state folder
        (``state_dir``) of ``task_id``.

        Raises:
            NotFoundError: an unknown task.  StateError: its actor or node is gone.
        """
        node = self.node_of(task_id)
        answer = self._get(node.actor.where.remote(), f"task {task_id}", node, CALL_TIMEOUT_S)
        return {**answer, "node": node.node_id[:12]}

    def create(
        self,
        backend: str | None,
        environment: str,
        options: dict[str, Any],
        secrets: Mapping[str, str],
        seed: bytes | None,
    ) -> dict[str, Any]:
        from pyro.cluster.nodes import needed_resource

        node = self._place(needed_resource(backend or "auto"))
        what = f"a new task of {environment}"
        ref = node.actor.create.remote(environment, options, dict(secrets), seed)
        info: dict[str, Any] = self._get(ref, what, node, CREATE_TIMEOUT_S)
        task_id = info.get("id") if isinstance(info, dict) else None
        if not isinstance(task_id, str) or not _TASK_ID_RE.fullmatch(task_id):
            raise malformed(what, node.name, f"no valid task id ({str(task_id)[:80]!r})")
        if task_id in self._where:  # it would take over another task's routing
            raise malformed(what, node.name, f"the id of a task already placed ({task_id})")
        node.tasks.add(task_id)
        self._where[info["id"]] = node
        return info

    def call(self, task_id: str, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """``method`` of the task's actor with ``args``; its answer.

        Raises:
            NotFoundError: an unknown task.  StateError: its actor or node is gone, or
                did not answer in ``timeout`` seconds.  The PyroError the node raised.
        """
        node = self.node_of(task_id)
        answer = self._get(
            getattr(node.actor, method).remote(task_id, *args), f"task {task_id}", node, timeout
        )
        if method == "delete":
            node.tasks.discard(task_id)
            self._where.pop(task_id, None)
        return answer

    def exec(
        self,
        task_id: str,
        command: Any,
        options: dict[str, Any],
        on_stdout: Callable[[bytes], None] | None,
        on_stderr: Callable[[bytes], None] | None,
    ) -> dict[str, Any]:
        """Run a command in the task, its output passed on as it arrives; the
        TaskExecOutput's JSON.

        Raises:
            StateError: the actor or its node died meanwhile.  The PyroError the node raised.
        """
        node = self.node_of(task_id)
        stream = node.actor.exec.remote(task_id, command, options)
        sinks = {"stdout": on_stdout, "stderr": on_stderr}
        for ref in _each(stream, lambda error: self._lost(f"task {task_id}", node, error)):
            item = self._get(ref, f"task {task_id}", node, CALL_TIMEOUT_S)
            kind, value = item if isinstance(item, tuple) and len(item) == 2 else (None, None)
            if kind == "done" and isinstance(value, dict):
                return dict(value)
            if kind == "error" and isinstance(value, Mapping):
                raise _rebuilt(value)
            if kind not in sinks or not isinstance(value, bytes):
                detail = f"a stream item that is not output ({type(value).__name__})"
                raise malformed(f"task {task_id}", node.name, detail)
            sink = sinks[kind]
            if sink is not None:
                sink(value)
        raise self._lost(f"task {task_id}", node, None)

    def _get(self, ref: Any, what: str, node: _Node, timeout: float) -> Any:
        ray = self._ray
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError as error:
            raise StateError(
                f"{what} on node {node.name} did not answer in {timeout:.0f} s",
                "the node may be partitioned; check it with 'pyro cluster doctor --on …'",
            ) from error
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, PyroError):
                raise cause from None
            raise PyroError(
                f"{what} failed on node {node.name}: {type(cause).__name__}: {cause}",
                "this is a bug in pyro on the node; its Ray worker log has the traceback",
            ) from error
        except Exception as error:  # the actor died, or its node: Ray's own errors
            raise self._lost(what, node, error) from error

    def _lost(self, what: str, node: _Node, error: BaseException | None) -> StateError:
        cause = f": {type(error).__name__}" if error is not None else ""
        return StateError(
            f"{what} was lost with node {node.name} (its task actor is gone{cause})",
            "its VM died with the actor; create the task again (on another node)",
        )

    def close(self) -> None:
        """Delete every task this client placed (each actor's ``close``), end the actors,
        then have every pyro node delete what a killed actor left. Idempotent."""
        if self._ray is None:
            return
        ray = self._ray
        nodes, self._nodes, self._where = list(self._nodes.values()), {}, {}
        refs = [node.actor.close.remote() for node in nodes]
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=CALL_TIMEOUT_S)
        for node in nodes:
            with contextlib.suppress(Exception):
                ray.kill(node.actor)
        if nodes:
            _reap_orphans_everywhere(ray)
        self._ray = None
        if self._joined:
            self._joined = False
            with contextlib.suppress(Exception):
                ray.shutdown()


def _each(stream: Any, lost: Callable[[BaseException], StateError]) -> Iterator[Any]:
    """The refs of a streaming call, Ray's errors on the way as ``lost(error)``."""
    while True:
        try:
            ref = next(stream)
        except StopIteration:
            return
        except PyroError:
            raise
        except Exception as error:
            raise lost(error) from error
        yield ref


def _rebuilt(data: Mapping[str, Any]) -> PyroError:
    """The PyroError a node reported as ``to_dict()``, as its own class when pyro has it."""
    import pyro.errors as errors

    kind = getattr(errors, str(data.get("type")), None)
    if (
        isinstance(kind, type)
        and issubclass(kind, PyroError)
        and kind.__init__ is PyroError.__init__
    ):
        return kind(str(data.get("message")), data.get("hint"))
    return PyroError(str(data.get("message")), data.get("hint"))


def _reap_orphans_everywhere(ray: Any) -> None:
    reap = ray.remote(max_retries=0, num_cpus=0)(_reap_on_node)
    refs = [
        reap.options(scheduling_strategy=on_node(node["NodeID"])).remote()
        for node in ray.nodes()
        if node.get("Alive") and any(k.startswith("pyro-") for k in node.get("Resources", {}))
    ]
    with contextlib.suppress(Exception):
        ray.wait(refs, num_returns=len(refs), timeout=CALL_TIMEOUT_S)


def _reap_on_node() -> list[str]:
    from pyro.cluster.task_host import reap_orphans

    return reap_orphans()
