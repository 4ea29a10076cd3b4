"""Errors that are the user's to fix: commands print them as one clear line, no traceback."""


class UserError(Exception):
    """A problem with the user's input, data or environment, with a message saying what to do."""


def int_setting(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as an int (at least ``minimum``), or a :class:`UserError` naming ``name``.

    ``int()`` alone would turn ``416.7`` into 416 and fail on ``"abc"`` with a traceback.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}")
    return value
