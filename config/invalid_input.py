"""``InvalidInput``: what a person gave is wrong (a setting out of range, a bad line in a file, a
model that cannot do what was asked); the message names it. A ``ValueError`` (so plain Python code
and tests read it as one), raised by the Django-free layers (the trainer's settings and data, the
sampling settings, the export and oracle choices). Commands show it as their error message
(``config.commands``); any other ``ValueError`` is a bug and keeps its traceback. Imports nothing."""


class InvalidInput(ValueError):
    """Bad input, named in the message."""
