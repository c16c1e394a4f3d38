"""The one exception type that reaches the user as a single clear line."""


class ThresherError(Exception):
    """A problem the user can fix: the message names the thing and what to do.

    The CLI prints it as one line and exits with code 2; no traceback.
    """
