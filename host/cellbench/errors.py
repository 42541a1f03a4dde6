"""The one error type for bad input: a file, a flag or a reply the user can fix."""


class InputError(Exception):
    """Bad input. The message names the field: ``"protocol.method[3].until_time_s: must be > 0"``.

    The CLI prints it on one line and exits with status 2; nothing else happens.
    """
