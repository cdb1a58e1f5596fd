"""Remove secrets from anything that may be logged, displayed or archived."""

from __future__ import annotations

import re

_PASSWORD_KV = re.compile(r"(?i)\b(password|passwd|dbpass)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_URI_PASSWORD = re.compile(r"(?i)\b(postgres(?:ql)?://[^:/@\s]+):([^@\s]+)@")


def redact(text: str) -> str:
    """Replace passwords in conninfo strings (key=value and URI forms) with ***."""
    text = _PASSWORD_KV.sub(lambda m: f"{m.group(1)}=***", text)
    return _URI_PASSWORD.sub(lambda m: f"{m.group(1)}:***@", text)
