"""Names a user gives that become one file or folder name (``sweep --name``, ``eval --name``).

One rule for all of them, so that no name can reach outside the folder it is meant for: a
name is one path component -- not empty, not ``.`` or ``..``, no ``/`` or ``\\``, printable,
not starting with ``-`` (read as an option) or ``.`` (hidden, and adaseg's own temporary
``.tmp-*`` files start so), and short enough to stay a valid file name with adaseg's prefixes
and suffixes added.
"""

from __future__ import annotations

# File names are at most 255 bytes; adaseg adds at most ~30 (``eval_`` ... ``.parts.safetensors``).
MAX_NAME_BYTES = 200


class BadNameError(ValueError):
    """A user-given name cannot be used as a file or folder name; the message says why."""


def check_name(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is one safe path component (see the module docstring), else raise
    :class:`BadNameError` naming ``what`` and the value."""
    def bad(why: str) -> BadNameError:
        return BadNameError(f"{what} {name!r} {why}")

    if not isinstance(name, str):
        raise BadNameError(f"{what} {name!r} must be a string")
    if not name:
        raise bad("is empty")
    if name in (".", ".."):
        raise bad("would name the folder itself or its parent: give a plain name")
    if "/" in name or "\\" in name:
        raise bad("must be one name, without / or \\")
    if not name.isprintable():
        raise bad("holds a character that cannot be printed")
    if name[0] in "-.":
        raise bad(f"must not start with {name[0]!r}")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise bad(f"is longer than {MAX_NAME_BYTES} bytes")
    return name
