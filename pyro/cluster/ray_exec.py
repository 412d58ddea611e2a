"""Running jobs on a Ray cluster: the only module that imports ``ray`` (on first use).

The controller pins each job's environment to a manifest digest (``oci://…@sha256:``),
ships the copy-in files once (object store, or an OCI artifact when large:
:mod:`pyro.cluster.copyin`), checks that some node can place
every job (Ray itself would leave it pending forever), and submits one Ray task per
attempt asking for one unit of ``pyro-kvm`` or ``pyro-tcg`` (:mod:`pyro.cluster.nodes`).
The node re-plans and applies (:mod:`pyro.cluster.worker`). Ray never retries a task
itself: the dispatcher decides, and a retry is steered away from the nodes tried before.
Cancelling asks every running task to stop (a KeyboardInterrupt in the worker, which
deletes its VM), then kills what has not stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyro.cluster.dispatch import NODE_LOST
from pyro.cluster.instances import Job
from pyro.cluster.nodes import accepted_resources, choose_resource, placement_problems
from pyro.errors import PlanError, PyroError, RegistryError, UsageError
from pyro.execute.result import InstanceInfo, RunResult
from pyro.plan.model import CopyInStep

if TYPE_CHECKING:
    from pyro.host.confine import Root
    from pyro.spec.model import RunSpec

#: How long a cancelled task has to clean up before it is killed.
CANCEL_GRACE_S = 20.0
_INSTALL_HINT = "install the cluster extra: pip install 'pyro-vm[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise UsageError(
            "running on a cluster needs Ray, which is not installed", _INSTALL_HINT
        ) from error
    return ray


def pin_environment(spec: RunSpec) -> str:
    """The spec's environment as ``oci://REGISTRY/REPOSITORY@sha256:…``, asked of its
    registry now, so every node runs the same bytes.

    Raises:
        PlanError: the environment has no registry (only built or installed here), or
            its registry did not answer.
    """
    from pyro.oci.reference import parse_oci_ref, resolve
    from pyro.spec.ref import OciRef

    written = spec.spec.environment
    parsed = spec.spec.environment_ref
    source = written if isinstance(parsed, OciRef) else _catalog_source(written)
    if source is None:
        raise PlanError(
            f"environment {written} is only on this host: cluster nodes pull environments "
            "from a registry",
            f"push it: pyro env push {written} oci://REGISTRY/REPOSITORY:TAG, and name that "
            "reference in the spec",
        )
    try:
        digest = resolve(source)
    except RegistryError as error:
        raise PlanError(
            f"cannot pin environment {written} for the cluster: {error.summary}",
            error.hint or "check that its registry answers from here and from every node",
        ) from error
    ref = parse_oci_ref(source)
    return f"oci://{ref.registry}/{ref.repository}@{digest}"


def _catalog_source(name: str) -> str | None:
    from pyro.host.gather import gather_inventory

    inventory = gather_inventory(refs=[name], resolve_remote=False)
    for entry in inventory.catalog:
        if entry.ref == name and entry.source:
            return entry.source
    for installed in inventory.installed:
        if installed.name == name and installed.source:
            return installed.source
    return None


class RayExecutor:
    """Attempts as Ray tasks on the cluster's nodes."""

    def __init__(
        self,
        ray: Any,
        jobs: list[Job],
        pins: dict[str, str],
        files: Any,
        root: Root | None = None,
        allow_tcg: bool = False,
    ) -> None:
        self._ray = ray
        self._pins = pins
        self._files = files
        self._root = root
        self._allow_tcg = allow_tcg
        self._refs: dict[Any, Job] = {}
        self._task = ray.remote(max_retries=0, num_cpus=0)(_run_on_node)
        self._joined = True  # leave the cluster on close (not when already connected)

    @classmethod
    def connect(
        cls,
        address: str,
        jobs: list[Job],
        *,
        prepull: bool = False,
        root: Root | None = None,
        allow_tcg: bool = False,
    ) -> RayExecutor:
        """Pin the environments, connect, check placement, (``prepull``: have every node
        that can run a job pull them now), ship the copy-in files. A confined caller's
        (``root``) artifacts come back into fresh folders under it. ``allow_tcg`` lets
        ``backend: auto`` run on nodes offering only ``pyro-tcg``.

        Raises:
            UsageError: Ray is not installed, or the cluster does not answer.
            PlanError: an environment cannot be pinned, no node can place a job (each
                node's reason is given), or a node could not prepull.
        """
        ray = _ray()
        pins = {}
        for job in jobs:
            spec = job.prepared.run
            if spec.spec.environment not in pins:
                pins[spec.spec.environment] = pin_environment(spec)
        joined = _init(ray, address)
        needed = [
            accepted_resources(job.prepared.run.spec.backend.value, allow_tcg) for job in jobs
        ]
        problems = placement_problems(needed, ray.nodes())
        if problems:
            if joined:
                _shutdown(ray)
            auto = any(job.prepared.run.spec.backend.value == "auto" for job in jobs)
            raise PlanError(
                "no cluster node can run this: " + "; ".join(problems),
                "join nodes with the resources 'pyro cluster resources' prints on each, "
                + (
                    "or allow TCG emulation for backend auto (--allow-tcg, "
                    "Pyro(cluster=…, allow_tcg=True)), "
                    if auto and not allow_tcg
                    else ""
                )
                + "or name a backend the nodes offer",
            )
        if prepull:
            _prepull(ray, sorted(set(pins.values())), {r for rs in needed for r in rs})
        base = jobs[0].prepared.loaded.base_dir if jobs else Path.cwd()
        sources = sorted({f.source.rstrip("/") for j in jobs for f in j.prepared.run.spec.files})
        # A missing source is left out: the node's plan then matches the controller's (no
        # digest) and its apply says the source does not exist, as a local apply does.
        present = [source for source in sources if (base / source).exists()]
        files = _ship_copy_ins(ray, base, present, next(iter(pins.values()), None))
        executor = cls(ray, jobs, pins, files, root, allow_tcg)
        executor._joined = joined
        return executor

    def submit(
        self, job: Job, attempt: int, avoid: frozenset[str]
    ) -> concurrent.futures.Future[RunResult]:
        spec = job.prepared.run
        pinned = self._pins[spec.spec.environment]
        body = spec.spec.model_copy(update={"environment": pinned})
        payload = {
            "spec": spec.model_copy(update={"spec": body}).model_dump(mode="json", by_alias=True),
            "name": job.name,
            "environment": pinned,
            "sources": {
                step.source: step.digest for step in job.plan.steps if isinstance(step, CopyInStep)
            },
        }
        accepted = accepted_resources(spec.spec.backend.value, self._allow_tcg)
        resource = (
            choose_resource(accepted, self._ray.nodes(), avoid, self._ray.available_resources())
            if len(accepted) > 1
            else accepted[0]
        )
        options: dict[str, Any] = {"resources": {resource: 1}}
        node = self._elsewhere(options["resources"], avoid)
        if node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
        ref = self._task.options(**options).remote(payload, self._files)
        self._refs[ref] = job
        outer: concurrent.futures.Future[RunResult] = concurrent.futures.Future()
        ref.future().add_done_callback(lambda inner: self._finish(job, ref, inner, outer))
        return outer

    def _elsewhere(self, resources: dict[str, int], avoid: frozenset[str]) -> str | None:
        """An alive node with the resource that no earlier attempt ran on (None: any)."""
        if not avoid:
            return None
        (resource,) = resources
        for node in self._ray.nodes():
            offers = node.get("Resources", {}).get(resource, 0) >= 1
            if node.get("Alive") and offers and node["NodeID"][:12] not in avoid:
                return str(node["NodeID"])
        return None

    def _finish(
        self,
        job: Job,
        ref: Any,
        inner: concurrent.futures.Future[Any],
        outer: concurrent.futures.Future[RunResult],
    ) -> None:
        self._refs.pop(ref, None)
        try:
            reply = inner.result()
        except self._ray.exceptions.RayTaskError as error:  # pyro failed on the node: a bug
            cause = error.cause if error.cause is not None else error
            outer.set_result(_failed_on_node(job, cause))
            return
        except BaseException as error:  # Ray's errors: the worker or its node died
            outer.set_result(_lost(job, error))
            return
        # A done-callback's exception is lost (the dispatch would wait forever): every
        # failure here becomes the instance's outcome, whatever the node sent.
        try:
            if not isinstance(reply, dict) or not isinstance(reply.get("artifacts"), bytes):
                raise ValueError("the node's reply is not a result with an artifact tar")
            result = RunResult.model_validate(reply["result"])
            result.instance = InstanceInfo(node=str(reply.get("node"))[:12])
            result.artifacts_dir = None  # the controller's to say, never the node's
            if reply["artifacts"]:
                _take_artifacts(job, result, reply["artifacts"], root=self._root)
            outer.set_result(result)
        except (PyroError, OSError, ValueError, LookupError, TypeError) as error:
            outer.set_exception(
                PyroError(f"the result of {job.name} could not be taken in: {error}")
            )

    def cancel(self) -> None:
        refs = list(self._refs)
        for ref in refs:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=False)
        if refs:
            _, stuck = self._ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
            for ref in stuck:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
            self._reap_everywhere()

    def _reap_everywhere(self) -> None:
        """Have every pyro node reap what a killed worker left (its VMM died with it)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        reap = self._ray.remote(max_retries=0, num_cpus=0)(_reap_on_node)
        refs = [
            reap.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote()
            for node in self._ray.nodes()
            if node.get("Alive") and any(k.startswith("pyro-") for k in node.get("Resources", {}))
        ]
        with contextlib.suppress(Exception):
            self._ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)

    def close(self) -> None:
        if self._joined:
            _shutdown(self._ray)


def _shutdown(ray: Any) -> None:
    with contextlib.suppress(Exception):
        ray.shutdown()


def _ship_copy_ins(ray: Any, base: Path, names: list[str], environment: str | None) -> Any:
    """The copy-in tar, once for every instance: in the object store, or (larger than
    :func:`pyro.cluster.copyin.artifact_threshold`) as an OCI artifact nodes pull."""
    import tempfile

    from pyro.cluster import copyin

    threshold = copyin.artifact_threshold()
    with tempfile.TemporaryDirectory(prefix="pyro-copy-in-") as scratch:
        tar = Path(scratch) / "copy-in.tar"
        size = copyin.pack_to(base, names, tar)
        if environment is None or not copyin.uses_artifact(size, threshold):
            return ray.put(tar.read_bytes())
        return copyin.push(tar, copyin.repository_for(environment))


def node_reports(address: str) -> list[dict[str, Any]]:
    """Every alive node's answer: what it joined with and what ``pyro cluster resources``
    says there now (a node whose answer differs should rejoin).

    Raises:
        UsageError: Ray is not installed, or the cluster does not answer.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray = _ray()
    connected = _init(ray, address)
    try:
        ask = ray.remote(max_retries=0, num_cpus=0)(_resources_on_node)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        refs = [
            ask.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote()
            for node in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=60)
        reports = []
        for node, ref in zip(nodes, refs, strict=True):
            joined = {
                k: int(v) for k, v in node.get("Resources", {}).items() if k.startswith("pyro-")
            }
            answer: dict[str, int] | None = ray.get(ref) if ref in ready else None
            reports.append(
                {
                    "node": str(node["NodeID"])[:12],
                    "address": node.get("NodeManagerAddress"),
                    "joined_with": joined,
                    "resources": answer,
                    "ok": answer is not None and answer == joined,
                }
            )
        return reports
    finally:
        if connected:
            ray.shutdown()


def _resources_on_node() -> dict[str, int]:
    from pyro.cluster.nodes import node_resources

    return node_resources()


def on_node(node_id: str) -> Any:
    """Ray's scheduling strategy that runs a task or actor on ``node_id`` and nowhere else."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def _init(ray: Any, address: str) -> bool:
    """Join the cluster as a driver (``ray://HOST:PORT`` names its GCS address); False when
    this process already is one (its task workspaces' connection is kept, not joined
    twice)."""
    if ray.is_initialized():
        return False
    target = address.removeprefix("ray://")
    try:
        ray.init(address=target, logging_level="ERROR", log_to_driver=False)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError
        raise UsageError(
            f"cannot join the Ray cluster at {address}: {error}",
            "start it with 'ray start --head --port PORT' and give --on ray://HEAD:PORT",
        ) from error
    return True


def _lost(job: Job, error: BaseException) -> RunResult:
    from pyro.cluster.dispatch import error_result

    lost = PyroError(
        f"instance {job.name} was lost with its node or worker: {type(error).__name__}",
        "the cluster retries it when it ran without network (spec.retries)",
    )
    result = error_result(job, lost)
    assert result.error is not None
    result.error["type"] = NODE_LOST
    return result


def _take_artifacts(job: Job, result: RunResult, data: bytes, *, root: Root | None = None) -> None:
    """Unpack a node's artifacts into the spec's folder (confined: a fresh folder under
    ``root``, named by ``result.artifacts_dir``, as a local confined run's): only the
    paths the plan copies out, within the copy-out caps. A refused tar fails the
    instance's result (the node is broken or hostile), not the dispatch.

    Raises:
        OSError: the host cannot write a file.
    """
    from pyro.cluster.worker import artifact_targets, unpack

    try:
        only = artifact_targets(job.plan.steps)
        if root is None:
            unpack(data, Path(job.plan.spec_dir or Path.cwd()), only=only)
            return
        folder = root.output_folder(job.name)
        result.artifacts_dir = str(folder)
        unpack(data, folder, only=only)
    except PyroError as error:
        result.ok = False
        result.error = error.to_dict()


def _failed_on_node(job: Job, cause: BaseException) -> RunResult:
    from pyro.cluster.dispatch import error_result

    return error_result(
        job,
        PyroError(
            f"instance {job.name} failed on its node: {type(cause).__name__}: {cause}",
            "this is a bug in pyro on the node; its Ray worker log has the traceback",
        ),
    )


def _prepull(ray: Any, refs: list[str], needed: set[str]) -> None:
    """Have every alive node offering a needed resource pull ``refs`` into its cache.

    Raises:
        PlanError: a node could not (its error is named).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    pull = ray.remote(max_retries=0, num_cpus=0)(_pull_on_node)
    nodes = [
        node
        for node in ray.nodes()
        if node.get("Alive") and any(node.get("Resources", {}).get(r, 0) >= 1 for r in needed)
    ]
    refs_by_node = [
        pull.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(refs)
        for node in nodes
    ]
    for node, ref in zip(nodes, refs_by_node, strict=True):
        problem = ray.get(ref)
        if problem:
            raise PlanError(
                f"node {node.get('NodeManagerAddress')} ({str(node['NodeID'])[:12]}) could "
                f"not prepull: {problem}",
                "check that the node reaches the registry, or apply without --prepull",
            )


def _pull_on_node(refs: list[str]) -> str | None:
    from pyro.environments import service
    from pyro.errors import PyroError

    try:
        for ref in refs:
            service.pull(ref)
    except PyroError as error:
        return error.summary
    return None


def _reap_on_node() -> int:
    from pyro.cluster.worker import reap

    return reap()


def _run_on_node(payload: dict[str, Any], files: bytes | dict[str, Any]) -> dict[str, Any]:
    import ray

    from pyro.cluster.worker import run_instance

    reply = run_instance(payload, files)
    reply["node"] = ray.get_runtime_context().get_node_id()
    return reply
