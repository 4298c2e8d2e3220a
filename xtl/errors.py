"""The one exception type for user mistakes.

Anything that is the caller's fault (a wrong layer, site, language, path) raises
`XtlError` with one sentence saying what was given, what is allowed, and what
to do. The command line prints that sentence and exits with status 2, without a
traceback. Bugs in xtl itself stay ordinary exceptions.
"""


class XtlError(ValueError):
    """A user mistake, described in one sentence."""
