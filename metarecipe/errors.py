"""The one base class of errors that are the user's input, not a bug.

Every expected failure (a bad data directory, config, audio file, model file, corpus, LM, token table...)
raises a subclass of InputError with a message that names the file, line or utterance and the reason.
`metarecipe` commands print such a message as one line on stderr and exit with status 1; anything else is a
bug and is reported as an internal error (the traceback comes with --debug).
"""

from __future__ import annotations


class InputError(Exception):
    """Input that cannot be used; str(error) says which and why."""
