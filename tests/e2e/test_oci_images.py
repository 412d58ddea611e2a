"""Container images as environments (issue #22), for real.

Images are built here from files (several layers, a whiteout, an opaque directory, a hard
link, a symlink, a setuid file, a file owned by uid 1234, a device node, an xattr), pushed
to Debian's docker-registry on 127.0.0.1 with OCI and with Docker v2 media types, and run
with ``pyro run oci://…`` on a real guest. The base layer is a shell and a few coreutils
copied from this Debian 12 host with their libraries; the kernel is the installed
debian:12's, copied into a private cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.oci_images import (
    Layer,
    Member,
    host_tools_layer,
    kernel_cache,
    layer,
    push_image,
    push_index,
)
from helpers.registry import Registry

from pyro.environments.cache.store import Cache, Install
from pyro.environments.service import EnvironmentService
from pyro.errors import RegistryError

pytestmark = [pytest.mark.registry]

CONFIG = {
    "Env": ["GREETING=hello from the image", "PATH=/usr/local/bin:/usr/bin:/bin"],
    "WorkingDir": "/opt/work",
    "User": "app",
    "Cmd": ["tool", "--version"],
}
PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1234:\n"
TOOL = b'#!/bin/sh\necho "tool 1.0 ($GREETING)"\n'
CHECK = (
    "tool --version; echo uid=$(id -u) gid=$(id -g) cwd=$(pwd); "
    "stat -c '%n %u %g %a %h %F' /opt/suid /opt/hl /opt/owned /opt/sl /opt/devnull "
    "/opt/old/new /opt/keep/b; readlink /opt/sl; cat /opt/hl; echo; "
    "for p in /opt/old/gone /opt/keep/a /opt/doomed; do test -e $p && echo present $p; done; "
    "echo end"
)


def tool_layers() -> list[Layer]:
    lower = layer(
        [
            Member("etc", kind="dir", mode=0o755),
            Member("etc/passwd", PASSWD),
            Member("etc/group", GROUP),
            Member("usr/local/bin/tool", TOOL, mode=0o755),
            Member("opt", kind="dir", mode=0o755),
            Member("opt/old", kind="dir", mode=0o755),
            Member("opt/old/gone", b"hidden by the opaque dir"),
            Member("opt/keep", kind="dir", mode=0o755),
            Member("opt/keep/a", b"whited out"),
            Member("opt/keep/b", b"kept"),
            Member("opt/doomed", b"whited out"),
        ]
    )
    upper = layer(
        [
            Member("opt/old", kind="dir", mode=0o755),
            Member("opt/old/.wh..wh..opq"),
            Member("opt/old/new", b"new"),
            Member("opt/keep/.wh.a"),
            Member("opt/.wh.doomed"),
            Member("opt/suid", b"setuid", mode=0o4755),
            Member("opt/owned", b"owned", mode=0o640, uid=1234, gid=1234),
            Member("opt/hl", kind="hardlink", link="opt/suid"),
            Member("opt/sl", kind="symlink", link="/etc/passwd", mode=0o777),
            Member("opt/devnull", kind="char", rdev=(1, 3), mode=0o666),
        ]
    )
    return [host_tools_layer(), lower, upper]


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
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def blobs(registry: Registry) -> list[str]:
    """Blob requests the registry served (a tag's manifest is asked for on every plan, as
    for any oci:// reference; blobs only when something is converted or pulled)."""
    return [r.path for r in registry.requests() if "/blobs/" in r.path and r.method == "GET"]


@pytest.mark.guest
@pytest.mark.slow
def test_run_an_oci_image_then_a_cache_hit(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    ref = registry.ref("library/tool", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")

    first = pyro(cache, "run", ref, "--", "tool", "--version")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "tool 1.0 (hello from the image)\n"

    before = blobs(registry)
    done = pyro(cache, "run", ref, "--", CHECK)
    assert done.returncode == 0, done.stderr
    assert blobs(registry) == before  # the second use is a cache hit: nothing fetched
    lines = done.stdout.splitlines()
    assert lines[0] == "tool 1.0 (hello from the image)"
    assert lines[1] == "uid=1234 gid=1234 cwd=/opt/work"  # User, WorkingDir
    assert lines[2:9] == [
        "/opt/suid 0 0 4755 2 regular file",
        "/opt/hl 0 0 4755 2 regular file",
        "/opt/owned 1234 1234 640 1 regular file",
        "/opt/sl 0 0 777 1 symbolic link",
        "/opt/devnull 0 0 666 1 character special file",
        "/opt/old/new 0 0 644 1 regular file",
        "/opt/keep/b 0 0 644 1 regular file",
    ]
    assert lines[9:] == ["/etc/passwd", "setuid", "end"]  # whited-out paths are absent

    install = cache.lookup(ref)
    assert install is not None
    defaults = install.manifest["defaults"]["image"]
    assert (defaults["uid"], defaults["gid"]) == (1234, 1234)
    assert defaults["cmd"] == ["tool", "--version"]


@pytest.mark.guest
@pytest.mark.slow
def test_docker_v2_media_types(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    """Docker v2 media types, named by a Run spec's ``environment``."""
    ref = registry.ref("library/tool-docker", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push", docker=True)
    run_spec = tmp_path / "run.yaml"
    run_spec.write_text(
        "apiVersion: pyro/v1\nkind: Run\nmetadata: {name: docker-image}\nspec:\n"
        f'  environment: "{ref}"\n  steps:\n    - {{name: version, argv: [tool, --version]}}\n'
    )
    done = pyro(cache, "apply", str(run_spec))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "tool 1.0 (hello from the image)\n"


@pytest.mark.guest
@pytest.mark.slow
def test_a_multi_arch_index_picks_amd64(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    base = host_tools_layer()
    pushed = []
    for arch in ("arm64", "amd64"):
        marker = layer([Member("marker", arch.encode())])
        ref = registry.ref("library/multi", arch)
        digest, size = push_image(ref, [base, marker], {}, tmp_path / arch, arch=arch)
        pushed.append((digest, size, arch))
    index_ref = registry.ref("library/multi", "1")
    push_index(index_ref, pushed)
    done = pyro(cache, "run", index_ref, "--", "cat", "/marker")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "amd64"
    install = cache.lookup(index_ref)
    assert install is not None
    assert install.manifest["createdFrom"]["image"]["manifestDigest"] == pushed[1][0]


@pytest.mark.hostile
def test_a_corrupt_layer_is_an_error_and_leaves_nothing(
    fresh_registry: Registry, cache: Cache, tmp_path: Path
) -> None:
    layers = tool_layers()
    ref = fresh_registry.ref("library/corrupt", "1")
    push_image(ref, layers, CONFIG, tmp_path / "push")
    blob = fresh_registry.blob_path(layers[2].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="does not match its digest"):
        EnvironmentService(cache).pull(ref)
    assert cache.status(ref).state == "not-installed"
    assert list((cache.root / "tmp").iterdir()) == []


@pytest.mark.hostile
@pytest.mark.parametrize(
    "members",
    [
        [Member("../../escape", b"out")],
        [Member("s", kind="symlink", link="/tmp"), Member("s/escape", b"out")],
        [Member("h", kind="hardlink", link="../../../etc/passwd")],
    ],
    ids=["dotdot", "symlink-parent", "hardlink-out"],
)
def test_a_hostile_layer_is_refused(
    registry: Registry, cache: Cache, tmp_path: Path, members: list[Member]
) -> None:
    ref = registry.ref("library/hostile", os.urandom(4).hex())
    push_image(ref, [layer([Member("ok", b"fine")]), layer(members)], {}, tmp_path / "push")
    with pytest.raises(RegistryError, match="refused"):
        EnvironmentService(cache).pull(ref)
    assert cache.status(ref).state == "not-installed"
    assert list((cache.root / "tmp").iterdir()) == []
    assert not Path("/tmp/escape").exists()


def test_a_layer_that_differs_from_its_diff_id_is_refused(
    registry: Registry, cache: Cache, tmp_path: Path
) -> None:
    good = layer([Member("f", b"promised")])
    other = layer([Member("f", b"something else")])
    ref = registry.ref("library/lying", "1")
    from helpers.oci_images import image_config

    config = image_config([good], {})
    push_image(ref, [other], {}, tmp_path / "push", config_bytes=config)
    with pytest.raises(RegistryError, match="its image config declares"):
        EnvironmentService(cache).pull(ref)
    assert cache.status(ref).state == "not-installed"


def test_the_same_image_by_another_reference_is_not_converted_again(
    registry: Registry, cache: Cache, tmp_path: Path
) -> None:
    ref = registry.ref("library/twice", "1")
    digest, _ = push_image(ref, [layer([Member("f", b"x")])], {}, tmp_path / "push")
    first = EnvironmentService(cache).pull(ref)
    fetched = blobs(registry)
    pinned = f"{registry.ref('library/twice', '1')}@{digest}"
    second = EnvironmentService(cache).pull(pinned)
    assert blobs(registry) == fetched  # no layer fetched again
    assert second.content_digest == first.content_digest
    assert second.rootfs.stat().st_ino == first.rootfs.stat().st_ino


def test_an_arm64_only_image_is_refused(registry: Registry, cache: Cache, tmp_path: Path) -> None:
    ref = registry.ref("library/armonly", "1")
    push_image(ref, [layer([Member("f", b"x")])], {}, tmp_path / "push", arch="arm64")
    with pytest.raises(RegistryError, match="linux/arm64 image"):
        EnvironmentService(cache).pull(ref)


SPEC = """\
apiVersion: pyro/v1
kind: Environment
metadata:
  name: "tool-env:1"
spec:
  version: 1.2.3
  from: {{image: "{image}"}}
  defaults: {{vcpus: 1, memoryMiB: 384}}
"""


@pytest.mark.guest
@pytest.mark.slow
def test_an_environment_spec_from_an_image(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    ref = registry.ref("library/tool-spec", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")
    spec = tmp_path / "tool-env.yaml"
    spec.write_text(SPEC.format(image=ref.removeprefix("oci://")))

    built = pyro(cache, "env", "build", str(spec), "--json")
    assert built.returncode == 0, built.stderr
    install = cache.lookup("tool-env:1")
    assert install is not None
    assert (install.version, install.default_memory_mib) == ("1.2.3", 384)
    assert install.manifest["defaults"]["image"]["workingDir"] == "/opt/work"
    assert install.manifest["createdFrom"]["image"]["reference"].startswith(ref + "@sha256:")

    fetched = blobs(registry)
    again = pyro(cache, "env", "build", str(spec))
    assert again.returncode == 0, again.stderr
    assert blobs(registry) == fetched  # same spec, same digest: kept
    assert cache.lookup("tool-env:1") == install

    done = pyro(cache, "run", "tool-env:1", "--", "tool", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "tool 1.0 (hello from the image)\n"


@pytest.mark.guest
@pytest.mark.slow
def test_a_scratch_image_with_one_static_binary_boots(
    registry: Registry, cache: Cache, tmp_path: Path, pyro_state: Path
) -> None:
    """No shell, no libc, no /etc, /dev or /proc: the agent needs nothing from the image."""
    from pyro.guest.build import build_agent_binary

    (tmp_path / "agent").mkdir()
    static = build_agent_binary(tmp_path / "agent").read_bytes()  # a static binary at hand
    ref = registry.ref("library/scratch", "1")
    push_image(ref, [layer([Member("hello", static, mode=0o755)])], {}, tmp_path / "push")
    done = pyro(cache, "run", ref, "--", "/hello", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pyro-agent ") and "protocol" in done.stdout


@pytest.mark.guest
@pytest.mark.slow
def test_a_task_on_an_image_runs_as_its_user(
    registry: Registry,
    cache: Cache,
    tmp_path: Path,
    pyro_state: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A task's own housekeeping (mkdir, sync, the seed disk) runs as root; the caller's
    commands as the image's user, with its Env, in the task's workspace."""
    from pyro import Pyro

    ref = registry.ref("library/tool-task", "1")
    push_image(ref, tool_layers(), CONFIG, tmp_path / "push")
    monkeypatch.setenv("PYRO_CACHE_DIR", str(cache.root))
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "given").write_text("seeded")
    pyro_sdk = Pyro()
    task = pyro_sdk.create_task(ref, seed_path=str(seed))
    try:
        out = pyro_sdk.exec_task(task.id, "id -u; pwd; tool --version; cat given; touch mine")
    finally:
        pyro_sdk.delete_task(task.id)
    assert out.exit_code == 0, out.stderr
    assert out.stdout.splitlines() == [
        "1234",
        "/workspace",
        "tool 1.0 (hello from the image)",
        "seeded",
    ]


def test_all_layers_together_unpack_within_the_pull_limit(
    registry: Registry, cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three layers of 1.5 MiB of zeros each (a few KiB gzipped) under a 2 MiB pull limit:
    each fits alone, together they do not; refused, nothing installed (a hostile registry's
    256 layers could otherwise unpack to 256 times the limit)."""
    monkeypatch.setenv("PYRO_PULL_MAX_MB", "2")
    ref = registry.ref("library/layered-bomb", os.urandom(4).hex())
    layers = [layer([Member(f"zeros-{n}", bytes(3 << 19))]) for n in range(3)]
    push_image(ref, layers, {}, tmp_path / "push")
    with pytest.raises(RegistryError, match="more than the pull limit"):
        EnvironmentService(cache).pull(ref)
    assert cache.status(ref).state == "not-installed"
    assert list((cache.root / "tmp").iterdir()) == []
