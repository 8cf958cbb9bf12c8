"""Errors a user can fix. The CLI prints them as one line and exits 2, without a traceback."""


class UserError(Exception):
    """Bad input: the message names the file or option and the problem, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
