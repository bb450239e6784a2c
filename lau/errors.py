"""The engine's one error type: a mistake in the caller's input, said in one line."""


class BadInput(ValueError):
    """Bad user input: unknown arch/dataset/class, malformed params, corrupt checkpoint.

    Front doors print ``str(err)`` as one line on stderr and exit 2.
    """
