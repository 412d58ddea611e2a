"""Shells and services on an environment made from a container image run as its ``User``,
as an exec does (docs/tasks.md, "Which user"), with its ``Env``; the image is the one of
tests/e2e/test_oci_images.py (User ``app``, uid 1234), pushed to a real registry."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from helpers.oci_images import push_image
from helpers.registry import Registry

from pyro.environments.cache.store import Cache
from tests.e2e.test_oci_images import CONFIG, cache, tool_layers

pytestmark = [pytest.mark.registry, pytest.mark.guest, pytest.mark.slow]
__all__ = ["cache"]  # the fixture, used by name


def test_shells_and_services_run_as_the_images_user(
    registry: Registry,
    cache: Cache,
    tmp_path: Path,
    pyro_state: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyro import Pyro

    ref = registry.ref("library/tool-procs", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")
    monkeypatch.setenv("PYRO_CACHE_DIR", str(cache.root))
    sdk = Pyro()
    task = sdk.create_task(ref)
    try:
        sdk.start_task_service(
            task.id, "who", ["sh", "-c", 'echo "uid=$(id -u) gid=$(id -g) $GREETING"; exec cat']
        )
        sdk.open_task_shell(task.id, "dev")
        sdk.write_task_shell(
            task.id,
            "dev",
            "echo shell-uid=$(id -u) tty=$(stat -c %u $(readlink /proc/self/fd/0))\n",
        )
        out, cursor = "", 0
        deadline = time.monotonic() + 60
        while not re.search(r"shell-uid=\d+ tty=\d+", out):  # not the echo of the typing
            assert time.monotonic() < deadline, out
            got = sdk.read_task_shell(task.id, "dev", cursor, wait_s=2)
            out, cursor = out + got.text, got.cursor
        log = sdk.logs_task_service(task.id, "who", wait_s=5)
        exec_uid = sdk.exec_task(task.id, "id -u").stdout.strip()
    finally:
        sdk.delete_task(task.id)
    assert exec_uid == "1234"
    assert "shell-uid=1234 tty=1234" in out, out
    assert log.text == "uid=1234 gid=1234 hello from the image\n"
