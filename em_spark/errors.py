"""User-facing errors: one line that names the file, column, row or key at fault."""

from __future__ import annotations


class EmError(Exception):
    """An error the user can fix. The CLI prints its message on one line and exits 2."""


class ConfigError(EmError):
    """A config file, key or value is wrong."""


class InputError(EmError):
    """An input table, file, column or row is wrong."""


class WriteConflictError(EmError):
    """Concurrent writers kept conflicting on a Delta table after the bounded retries."""
