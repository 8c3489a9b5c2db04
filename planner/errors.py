"""The one exception type cp-plan raises for bad input or an impossible request.

The CLI turns it into a single line on stderr and a non-zero exit; a traceback is shown only
when CP_PLAN_DEBUG=1.
"""


class CpPlanError(Exception):
    """A user-facing error: the message names the bad value, what is allowed, and the fix."""


import re

_URL_USERINFO = re.compile(r"(://[^\s:/@'\"]*:)[^\s'\"]*@")
_QUERY_SECRET = re.compile(r"((?:^|[?&;\s'\"])(?:ssl)?pass(?:word)?=)[^&\s'\"]*", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """``text`` with database passwords replaced by ``***``: the ``user:PW@`` of URLs and
    ``password=PW`` in a URL's query or a libpq keyword string. Applied to every message the CLI
    prints and to every database name shown, so a password given on the command line never
    reaches a terminal, a log, ``--json`` or a report."""
    return _QUERY_SECRET.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))
