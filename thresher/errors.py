"""The one exception type that reaches the user as a single clear line."""


class ThresherError(Exception):
    """A problem the user can fix: the message names the thing and what to do.

    The CLI prints it as one line and exits with code 2; no traceback.
    """


def user_message(e: ThresherError) -> str:
    """The one line to show for `e`.

    A ThresherError raised in a DataLoader worker is re-raised in the main process by torch
    with the worker's whole traceback in its message; its last line holds what was said.
    """
    text = str(e)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split("ThresherError: ", 1)[-1]
    return text
