"""Errors that are the user's to fix.

Anything raised as a ``UserError`` reaches the terminal as one sentence and exit code 2, never as a
traceback. Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (files, config, flags): reported in one line, exit code 2."""

    exit_code = 2


class DataError(UserError):
    """A malformed dataset row or file; the message names the file and line."""


class ConfigError(UserError):
    """A setting of the wrong type or value; the message names the field."""


class ModelError(UserError):
    """A model source that cannot be found or loaded."""
