"""Credentials out of log lines: user:password in URLs and the query strings of URLs.

A NATS URL may carry `user:password@` (nats-py accepts it, and older kairyu charts wrote it so),
and an error message may repeat the URL it failed on. Everything the bus logs or puts into an
exception message about a connection goes through `redact` first.
"""

from __future__ import annotations

import re

# Greedy up to the last `@` before the host: a password may itself contain `@` (`u:p@ss@host`).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#]*@")
_QUERY = re.compile(r"(?P<url>[A-Za-z][A-Za-z0-9+.-]*://[^\s?#]*)\?[^\s#'\"]*")


def redact(text: str) -> str:
    """`text` with the user information and query string of every URL in it replaced by `***`."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    return _QUERY.sub(r"\g<url>?***", text)
