"""Fault scenarios: kill -9 of pyro, a registry dying mid-pull, a full disk, a corrupted cache,
and guests that flood, fork-bomb or fill their disk."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import Soak, find_leaks, kill_after, peak_rss_mib, wait_gone

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.registry import Registry

ENV = "debian:12"

APPLY_SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: soak}
spec:
  environment: debian:12
  timeoutSeconds: 60
  files: [{source: ./in, target: /workspace/in}]
  steps:
    - {name: work, run: "sleep 4; mkdir -p /workspace/out; echo done > /workspace/out/r.txt"}
  artifacts: [{source: /workspace/out, target: ./out/}]
"""


def kill_injections(
    soak: Soak, registry: Registry, count: int, rng: random.Random
) -> dict[str, Any]:
    """``count`` SIGKILLs of pyro at random moments of run / apply / task exec / env pull."""
    (soak.work / "in").mkdir(exist_ok=True)
    (soak.work / "in" / "a.txt").write_text("soak\n")
    (soak.work / "soak.yaml").write_text(APPLY_SPEC)
    pull_cache = soak.work / "pull-cache"
    pull_env = soak.env(PYRO_CACHE_DIR=str(pull_cache))
    task = soak.pyro("task", "create", ENV, "--json")
    task_id = json.loads(task.stdout)["task"]["id"] if task.returncode == 0 else None
    if task_id is None:
        soak.notes.append(f"task create failed: {task.stderr[-300:]}")
    commands: dict[str, tuple[list[str], tuple[float, float]]] = {
        "run": (["run", ENV, "--", "sh", "-c", "echo hi; sleep 3"], (0.3, 4.5)),
        "apply": (["apply", "soak.yaml"], (0.3, 5.0)),
        "task exec": (["task", "exec", str(task_id), "--", "sh", "-c", "sleep 3"], (0.2, 3.0)),
        "env pull": (["env", "pull", ENV], (0.05, 1.6)),
    }
    kinds = [k for k in commands if k != "task exec" or task_id]
    done: list[dict[str, Any]] = []
    # A command that ends before its kill still counts for leaks but not as an injection:
    # go on until ``count`` kills landed (bounded, in case a command is always too quick).
    for i in range(count * 2):
        if sum(1 for d in done if d["killed"]) >= count:
            break
        kind = kinds[i % len(kinds)]
        argv, (low, high) = commands[kind]
        env = pull_env if kind == "env pull" else soak.env()
        if kind == "env pull":
            shutil.rmtree(pull_cache / "environments", ignore_errors=True)
        delay = rng.uniform(low, high)
        code, err = kill_after(soak.start(*argv, env=env), delay)
        if code is not None:
            soak.scan(argv, code, err)
        follow = ["env", "prune"] if kind == "env pull" else ["vm", "list", "--json"]
        soak.pyro(*follow, env=env)
        wait_gone(soak.state)
        leaks = find_leaks(soak.state, pull_cache if kind == "env pull" else None)
        if kind == "env pull":
            leaks += _partial_install(soak, pull_env)
        soak.leaks += [f"after kill of {kind} at {delay:.2f}s: {leak}" for leak in leaks]
        done.append({"kind": kind, "delay_s": round(delay, 2), "killed": code is None})
    if task_id:
        soak.pyro("task", "delete", task_id)
    soak.leaks += [f"after deleting the task: {leak}" for leak in find_leaks(soak.state)]
    return {"injections": done, "killed": sum(1 for d in done if d["killed"])}


def _partial_install(soak: Soak, env: dict[str, str]) -> list[str]:
    """An install must be valid (full hash check) or absent; nothing in between may pass."""
    inspect = soak.pyro("env", "inspect", ENV, "--json", env=env)
    if inspect.returncode != 0:
        return [f"env inspect failed: {inspect.stderr[-300:]}"]
    if _state(inspect.stdout) != "installed":
        return []
    verify = soak.pyro("env", "inspect", ENV, "--verify", "--json", env=env)
    if verify.returncode != 0 or _state(verify.stdout) != "installed":
        return ["an install passed the quick check but fails verification"]
    return []


def _state(stdout: str) -> str | None:
    try:
        data = json.loads(stdout)
    except ValueError:
        return None
    state = data.get("environment", {}).get("state")
    return state if isinstance(state, str) else None


def registry_dies_mid_pull(soak: Soak, registry: Registry, rng: random.Random) -> dict[str, Any]:
    """Kill the registry while a pull downloads; the next pull (registry back) must succeed."""
    cache = soak.work / "regkill-cache"
    env = soak.env(PYRO_CACHE_DIR=str(cache))
    attempts = 0
    while attempts < 5:  # loopback is fast: retry until the kill lands mid-download
        attempts += 1
        shutil.rmtree(cache, ignore_errors=True)
        seen = len(registry.blob_requests())
        proc = soak.start("env", "pull", ENV, env=env)
        deadline = time.monotonic() + 60
        while len(registry.blob_requests()) <= seen and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))
        registry.kill()
        out, err = proc.communicate(timeout=300)
        soak.scan(["env", "pull"], proc.returncode, out + err)
        partial = _partial_install(soak, env)
        registry.start()
        if proc.returncode != 0:
            break
    again = soak.pyro("env", "pull", ENV, env=env)
    verify = soak.pyro("env", "inspect", ENV, "--verify", "--json", env=env)
    ok = verify.returncode == 0 and _state(verify.stdout) == "installed"
    soak.leaks += [f"registry killed mid-pull: {p}" for p in partial]
    if again.returncode != 0 or not ok:
        soak.leaks.append(f"pull after the registry came back failed: {again.stderr[-300:]}")
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "attempts": attempts,
        "first_pull_exit": proc.returncode,
        "first_pull_error": _error_line(err),
        "partial_installs": len(partial),
        "next_pull_exit": again.returncode,
        "verified": ok,
    }


def disk_full_install(soak: Soak) -> dict[str, Any]:
    """A pull into a cache on a 64 MiB tmpfs: a clear error, and the cache as it was."""
    small = soak.work / "small"
    small.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "soak-small", str(small)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        soak.notes.append(f"disk-full scenario skipped (mount failed: {mount.stderr.strip()})")
        return {"skipped": mount.stderr.strip()}
    try:
        cache = small / "cache"
        env = soak.env(PYRO_CACHE_DIR=str(cache))
        soak.pyro("env", "list", env=env)  # creates the cache's bookkeeping dirs, as a user would
        before = _listing(cache)
        pull = soak.pyro("env", "pull", ENV, env=env)
        after = _listing(cache)
        clear = pull.returncode == 1 and "error:" in pull.stderr and "hint:" in pull.stderr
        if not clear:
            soak.leaks.append(f"disk full: unclear result {pull.returncode}: {pull.stderr[-400:]}")
        if before != after:
            soak.leaks.append(f"disk full: cache changed: {sorted(set(after) ^ set(before))}")
        return {
            "exit": pull.returncode,
            "error": _error_line(pull.stderr),
            "unchanged": before == after,
        }
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def _listing(root: Path) -> list[str]:
    # Lock files and the (empty) tmp/ folder are bookkeeping a pull may leave by design.
    return sorted(
        str(rel)
        for rel in (p.relative_to(root) for p in root.rglob("*"))
        if rel.parts[0] != "locks" and str(rel) != "tmp"
    )


def _error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    return lines[-1][:300] if lines else text.strip()[-300:]


CORRUPTIONS = {
    "truncated rootfs": lambda d: _truncate(d / "rootfs.ext4"),
    "flipped byte in vmlinux": lambda d: _flip(d / "vmlinux"),
    "manifest deleted": lambda d: (d / "manifest.json").unlink(),
    "garbage current.json": lambda d: (d.parent / "current.json").write_text("{not json"),
    "current.json deleted": lambda d: (d.parent / "current.json").unlink(),
    "vmlinux is a symlink to /etc/passwd": lambda d: _symlink(d / "vmlinux", Path("/etc/passwd")),
    "install dir emptied": lambda d: [p.unlink() for p in d.iterdir() if p.is_file()],
    "stale work dir in tmp/": lambda d: _stale_tmp(d.parents[2] / "tmp"),
}


REPAIRED_BY_PRUNE = {"stale work dir in tmp/"}


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _flip(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))


def _symlink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def _stale_tmp(tmp: Path) -> None:
    junk = tmp / "999999-deadbeef"
    junk.mkdir(parents=True, exist_ok=True)
    (junk / "rootfs.ext4").write_bytes(b"\0" * 65536)


def cache_corruptions(soak: Soak) -> dict[str, Any]:
    """Corrupt a good install in each way; ``pyro env pull`` must repair it (verified)."""
    cache = soak.work / "corrupt-cache"
    env = soak.env(PYRO_CACHE_DIR=str(cache))
    results: dict[str, bool] = {}
    for name, corrupt in CORRUPTIONS.items():
        soak.pyro("env", "pull", ENV, env=env)
        where = _install_dir(cache)
        if where is None:
            soak.notes.append(f"corruption {name!r}: no install to corrupt")
            results[name] = False
            continue
        corrupt(where)
        # Work dirs are debris of a dead process, not part of an install: prune sweeps them
        # (as does the next pull that downloads); an install the quick check rejects is
        # replaced by the next pull.
        repair = ("env", "prune") if name in REPAIRED_BY_PRUNE else ("env", "pull", ENV)
        pull = soak.pyro(*repair, env=env)
        verify = soak.pyro("env", "inspect", ENV, "--verify", "--json", env=env)
        repaired = (
            pull.returncode == 0
            and verify.returncode == 0
            and _state(verify.stdout) == "installed"
            and not any((cache / "tmp").glob("*"))
        )
        results[name] = repaired
        if not repaired:
            soak.notes.append(f"corruption {name!r} not repaired: {pull.stderr[-300:]}")
    shutil.rmtree(cache, ignore_errors=True)
    return results


def _install_dir(cache: Path) -> Path | None:
    for current in (cache / "environments").glob("*/current.json"):
        digest = json.loads(current.read_text())["digest"].removeprefix("sha256:")
        return current.parent / digest
    return None


def hostile_guests(soak: Soak) -> dict[str, Any]:
    """Guests that flood output, fork-bomb or fill their disk: the host stays unaffected."""
    cases = {
        "flood": (["--timeout-seconds", "120", "--", "sh", "-c", "yes | head -c 300000000"], 0),
        "fork bomb": (
            ["--timeout-seconds", "20", "--", "bash", "-c", ":(){ :|:& };:; sleep 60"],
            124,
        ),
        "disk fill": (
            [
                "--timeout-seconds",
                "150",
                "--",
                "sh",
                "-c",
                "dd if=/dev/zero of=/fill bs=1M || exit 7",  # ENOSPC in the guest
            ],
            7,
        ),
    }
    out: dict[str, Any] = {}
    for name, (args, expected) in cases.items():
        free_before = shutil.disk_usage(soak.work).free  # informational: others share the disk
        proc = subprocess.Popen(
            [*_pyro_argv(), "run", ENV, *args],
            env=soak.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=soak.work,
        )
        rss = peak_rss_mib(proc)
        err = proc.communicate(timeout=60)[1]
        soak.scan(["run", name], proc.returncode, err)
        wait_gone(soak.state)
        leaks = find_leaks(soak.state)
        delta_mib = (free_before - shutil.disk_usage(soak.work).free) / (1 << 20)
        closing = [line for line in err.splitlines() if "exit_code=" in line or "error:" in line]
        out[name] = {
            "exit": proc.returncode,
            "expected_exit": expected,
            "pyro_peak_rss_mib": round(rss, 1),
            "host_disk_delta_mib": round(delta_mib, 1),
            "state_dir_mib_after": round(_du(soak.state) / (1 << 20), 2),
            "result_line": closing[-1][:200] if closing else err.strip()[-200:],
        }
        soak.leaks += [f"after {name}: {leak}" for leak in leaks]
        # Under TCG a fork bomb can starve the agent past its kill: the host then ends the
        # run at its own deadline (exit 125, "did not answer ... in time") - also a clear end.
        starved = name == "fork bomb" and proc.returncode == 125 and "in time" in err
        out[name]["clear_end"] = proc.returncode == expected or starved
        if proc.returncode != expected or rss > 400:
            soak.notes.append(f"hostile guest {name}: {out[name]}")
    return out


def _du(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def _pyro_argv() -> list[str]:
    from harness import PYRO

    return list(PYRO)
