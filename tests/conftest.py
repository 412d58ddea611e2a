"""Shared pytest configuration: fixture modules every test directory can use."""

from __future__ import annotations

pytest_plugins = ["helpers.registry", "helpers.guest"]
