"""Errors the CLI turns into one line on stderr and a non-zero exit, never a traceback."""


class UserError(Exception):
    """Bad input: a path, file or flag the user can fix. Exit code 2."""

    exit_code = 2


class BuildFailed(Exception):
    """The input was fine but the build did not produce a usable artifact. Exit code 1.

    `details` holds extra lines (toolkit log tail, layer names) shown under the one-line message.
    `ending` says how a child process ended, for a program to read (converter.toolkit.child.Ending), or None.
    """

    exit_code = 1

    def __init__(self, message: str, details: tuple[str, ...] = (), ending=None):
        super().__init__(message)
        self.details = details
        self.ending = ending
