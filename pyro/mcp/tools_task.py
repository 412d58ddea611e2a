"""The ``task_*`` and ``env_*`` tools (pending the task and environment SDK methods)."""

from __future__ import annotations

from pyro.sdk import Pyro


class TaskTools:
    def __init__(self, sdk: Pyro) -> None:
        self.sdk = sdk


class EnvTools:
    def __init__(self, sdk: Pyro) -> None:
        self.sdk = sdk
