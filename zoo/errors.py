"""The project's own error types: every fault a user can cause ends in one of these."""

from __future__ import annotations

from pathlib import Path


class ZooError(Exception):
    """Base class of every error zoo raises on purpose."""


class BasisError(ZooError):
    """An element, basis name or shell layout the basis table does not know."""


class ConventionError(ZooError):
    """An unknown source code convention or an l it does not define."""


class ConfigError(ZooError):
    """A bad preset, unknown key or invalid hyper-parameter."""


class DataError(ZooError):
    """A dataset, structure or imported file is malformed.

    The message always names the file (when there is one) and the fault.
    """

    def __init__(self, fault: str, path: str | Path | None = None):
        self.fault = fault
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {fault}" if self.path else fault)


class GraphError(DataError):
    """A structure cannot be turned into a valid neighbour graph (cell too small, ...)."""


class ModelError(ZooError):
    """Registry problems: unknown model name, duplicate registration, contract violations."""
