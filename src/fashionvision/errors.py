"""Errors that are the user's to fix: commands print them as one clear line, no traceback."""


class UserError(Exception):
    """A problem with the user's input, data or environment, with a message saying what to do."""
