"""The one exception type that the CLI turns into a single clear sentence."""


class UserError(Exception):
    """Bad input from the user: the message names the bad value and what would be valid."""
