"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class AwclError(Exception):
    """A problem with the user's input or configuration, worded for the user."""


class DataError(AwclError):
    """A source file or prepared dataset is missing, malformed or inconsistent."""
