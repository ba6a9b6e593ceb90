class HarnessError(Exception):
    """A problem the user can fix (missing binary, unreachable database, a server that fails).

    The CLI prints it as one line and exits with code 1; it is never shown as a traceback.
    """


class UsageError(HarnessError):
    """Bad input (an unknown server, a malformed value, an unwritable OUT): exit code 2."""
