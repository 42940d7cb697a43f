"""The kernel command line, split as the kernel splits it, and the ``recovery.*`` parameters (pure)."""

from __future__ import annotations

PREFIX = "recovery."


def split_cmdline(text: str) -> list[str]:
    """Split a kernel command line the way the kernel does.

    Parameters are separated by whitespace; double quotes group spaces and are
    removed (``a="b c"`` -> ``a=b c``).  Everything after a lone ``--`` is for
    init, not a kernel parameter, and is dropped.
    """
    params: list[str] = []
    current: list[str] = []
    in_quote = False
    started = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
            started = True
        elif ch.isspace() and not in_quote:
            if started:
                params.append("".join(current))
                current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        params.append("".join(current))
    if "--" in params:
        params = params[: params.index("--")]
    return params


def parameter(text: str, name: str) -> str | None:
    """The value of ``recovery.NAME=`` on the command line ``text`` (the last one given; None: absent)."""
    found = None
    for param in split_cmdline(text):
        key, sep, value = param.partition("=")
        if sep and key == PREFIX + name:
            found = value
    return found
