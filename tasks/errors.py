"""The one base of rnnflow's own errors: a problem the user can act on, told in one sentence that names it and the fix.

Every error rnnflow raises on purpose derives from RnnflowError (and keeps its older base, ValueError or OSError, for
callers that catch those). The CLI prints such an error once, without a traceback, and exits 2; anything else is a bug
or a fault of the machine and keeps its traceback in the run's run.log.
"""

from __future__ import annotations


class RnnflowError(Exception):
    """One sentence for the user: what is wrong and how to fix it."""
