"""An Environment spec from a container image with ``files`` and a ``setup`` (issue #22), for real.

The image is built here from files and pushed to Debian's docker-registry on 127.0.0.1
(:mod:`helpers.oci_images`); ``pyro env build`` adds the spec's files, boots a real guest
from the converted image to run the setup command as root, and installs the guest's
disk; ``pyro run`` on the result sees both. A failing setup is a clear error that leaves
nothing behind: no install, no work dir, no VMM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers.oci_images import Layer, Member, host_tools_layer, kernel_cache, layer, push_image
from helpers.registry import Registry

from pyro.environments.cache.store import Cache, Install
from pyro.environments.service import EnvironmentService

pytestmark = [pytest.mark.registry]

CONFIG = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "User": "app"}


def tool_layers() -> list[Layer]:
    """The host's shell and a few tools, and a user ``app`` (uid 1234) the image runs as."""
    users = layer(
        [
            Member("etc", kind="dir", mode=0o755),
            Member("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n"),
            Member("etc/group", b"root:x:0:\napp:x:1234:\n"),
        ]
    )
    return [host_tools_layer(), users]


@pytest.fixture
def cache(tmp_path: Path, guest_install: Install) -> Cache:
    """A private cache with the installed debian:12's kernel: it boots the images."""
    return kernel_cache(tmp_path / "kernel", guest_install)


def pyro(cache: Cache, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYRO_CACHE_DIR": str(cache.root)}
    env.pop("PYRO_ENV_REGISTRY", None)
    code = "import sys; from pyro.cli.main import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def blobs(registry: Registry) -> list[str]:
    return [r.path for r in registry.requests() if "/blobs/" in r.path and r.method == "GET"]


SETUP = (
    "echo built > /etc/built && id -u > /etc/setup-uid && "
    "cat /opt/app/lib/data.txt > /etc/copied && "
    "echo 'builder:x:2000:2000::/home/builder:/bin/sh' >> /etc/passwd && "
    "mkdir -p /home/builder && echo setup-says-hello"
)
SPEC = """\
apiVersion: pyro/v1
kind: Environment
metadata:
  name: "{name}"
spec:
  version: 1.0.0
  from: {{image: "{image}"}}
  files:
    - {{source: app/, target: /opt/app}}
{setup}  defaults: {{vcpus: 1, memoryMiB: 384}}
"""
CHECK = (
    "cat /etc/built /etc/setup-uid /etc/copied; echo; cat /etc/passwd; "
    "stat -c '%n %u %g %a' /opt/app/run.sh /opt/app/lib/data.txt /home/builder; "
    "/opt/app/run.sh; id -u"
)


def write_spec(folder: Path, name: str, image: str, setup: str | None) -> Path:
    (folder / "app" / "lib").mkdir(parents=True)
    (folder / "app" / "run.sh").write_text("#!/bin/sh\necho app runs\n")
    (folder / "app" / "run.sh").chmod(0o755)
    (folder / "app" / "lib" / "data.txt").write_text("from the host")
    spec = folder / "env.yaml"
    line = f'  setup: "{setup}"\n' if setup is not None else ""
    spec.write_text(SPEC.format(name=name, image=image.removeprefix("oci://"), setup=line))
    return spec


def vmms_under(root: Path) -> list[int]:
    """VMM processes whose command line names a path under ``root``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(root) in part for part in proc.info["cmdline"] or ()):
            found.append(proc.info["pid"])
    return found


@pytest.mark.guest
@pytest.mark.slow
def test_files_and_setup_build_an_environment_then_a_cache_hit(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    ref = registry.ref("library/tool-setup", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")
    spec = write_spec(tmp_path / "spec", "tool-setup:1", ref, SETUP)

    built = pyro(cache, "env", "build", str(spec))
    assert built.returncode == 0, built.stderr
    assert "[build] setup: setup-says-hello" in built.stderr  # its output is shown
    install = cache.lookup("tool-setup:1")
    assert install is not None
    created = install.manifest["createdFrom"]
    assert created["setup"]["run"] == SETUP and created["setup"]["network"] == "off"
    assert created["files"]["digest"].startswith("sha256:")
    assert created["buildKey"].startswith("sha256:")
    # The guest powered off cleanly: the file system it wrote is consistent.
    fsck = subprocess.run(["e2fsck", "-fn", str(install.rootfs)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    done = pyro(cache, "run", "tool-setup:1", "--", CHECK)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["built", "0", "from the host"]  # setup ran as root, after the files
    assert "builder:x:2000:2000::/home/builder:/bin/sh" in lines
    assert lines[-5:] == [
        "/opt/app/run.sh 0 0 755",
        "/opt/app/lib/data.txt 0 0 644",
        "/home/builder 0 0 755",
        "app runs",
        "1234",  # runs keep the image's User
    ]

    fetched = blobs(registry)
    again = pyro(cache, "env", "build", str(spec))
    assert again.returncode == 0, again.stderr
    assert "[build] setup" not in again.stderr  # no guest booted
    assert blobs(registry) == fetched
    assert cache.lookup("tool-setup:1") == install

    # The plain image by its reference is the image, not linked to what setup made of it.
    plain = EnvironmentService(cache).pull(ref)
    assert plain.rootfs.stat().st_ino != install.rootfs.stat().st_ino
    assert "setup" not in plain.manifest["createdFrom"]

    # Pushable like any environment, and pulled back byte for byte.
    target = registry.ref("pyro/tool-setup", "1")
    pushed = pyro(cache, "env", "push", "tool-setup:1", target, "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["digest"].startswith("sha256:")
    pulled: Install = EnvironmentService(Cache(tmp_path / "other")).pull(target)
    assert pulled.manifest["artifacts"] == install.manifest["artifacts"]


@pytest.mark.guest
@pytest.mark.slow
def test_a_failing_setup_is_a_clear_error_and_leaves_nothing(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    ref = registry.ref("library/tool-fail", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")
    spec = write_spec(tmp_path / "spec", "tool-fail:1", ref, "echo about to fail; exit 3")

    failed = pyro(cache, "env", "build", str(spec))
    assert failed.returncode != 0
    assert "setup command 'echo about to fail; exit 3' exited with code 3" in failed.stderr
    assert "about to fail" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert cache.status("tool-fail:1").state == "not-installed"
    assert list((cache.root / "tmp").iterdir()) == []
    assert vmms_under(cache.root) == []


def test_a_tag_pushed_again_is_built_again(
    registry: Registry, cache: Cache, tmp_path: Path
) -> None:
    """The build is keyed by the image too: same spec, same files, a new image under the
    tag is a new build (files only, so no guest boots here)."""
    ref = registry.ref("library/tool-moved", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")
    spec = write_spec(tmp_path / "spec", "tool-moved:1", ref, None)
    service = EnvironmentService(cache)
    first = service.build(str(spec))
    assert service.build(str(spec)).digest == first.digest  # nothing changed: kept
    assert first.manifest["createdFrom"]["files"]["entries"] == 1
    assert "setup" not in first.manifest["createdFrom"]

    moved = [*tool_layers(), layer([Member("marker", b"second push")])]
    push_image(ref, moved, CONFIG, tmp_path / "push2")
    second = service.build(str(spec))
    assert second.digest != first.digest
    image, before = second.manifest["createdFrom"], first.manifest["createdFrom"]
    assert image["image"]["digest"] != before["image"]["digest"]
    assert image["buildKey"] != before["buildKey"]
    assert image["files"] == before["files"]
