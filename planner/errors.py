"""The one exception type cp-plan raises for bad input or an impossible request.

The CLI turns it into a single line on stderr and a non-zero exit; a traceback is shown only
when CP_PLAN_DEBUG=1.
"""


class CpPlanError(Exception):
    """A user-facing error: the message names the bad value, what is allowed, and the fix."""
