"""The one exception type users see: a message that names the problem and the fix."""

from __future__ import annotations

import re


class ConvbenchError(Exception):
    """A user-facing failure: the CLI prints its message on one line and exits non-zero."""

    exit_code = 1


class ParamsError(ConvbenchError):
    """params.yaml is missing, unreadable or invalid; exit code 2 like any usage error."""

    exit_code = 2


class DataError(ConvbenchError):
    """A dataset's files are missing, unreadable or fail their checksum."""


def redact(text: str) -> str:
    """Hide the password or token in any 'scheme://user:secret@host' inside `text`."""
    return re.sub(r"(//[^/:@\s]+):[^@/\s]+@", r"\1:***@", text)
