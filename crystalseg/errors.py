"""The exceptions crystalseg raises.

Every fault a user can fix raises a subclass of :class:`CrystalsegError`; each
subclass also inherits the matching built-in, so ``except ValueError`` keeps
working for callers that do not know crystalseg. The CLI prints the message of
a ``CrystalsegError`` as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class CrystalsegError(Exception):
    """Base class of every error a user can act on."""


class InputNotFoundError(CrystalsegError, FileNotFoundError):
    """A path given by the user does not exist."""


class UnsupportedInputError(CrystalsegError, ValueError):
    """A path exists but no reader understands it (not an image, unknown layout)."""


class FrameMismatchError(CrystalsegError, ValueError):
    """Frames of one recording differ in size, channels or dtype."""


class RunFormatError(CrystalsegError, ValueError):
    """A run store is missing, incomplete, or written by an incompatible version."""


class StageStateError(CrystalsegError, RuntimeError):
    """A stage cannot run in the store's current state (e.g. output exists, no --overwrite)."""


class RunLockedError(StageStateError):
    """Another process (or thread) is writing the run store; one writer at a time."""


class MaskValueError(CrystalsegError, ValueError):
    """A mask holds values that map to no class."""


class CheckpointError(CrystalsegError, ValueError):
    """A model checkpoint is unreadable, unsafe or incompatible."""


class ConfigError(CrystalsegError, ValueError):
    """A setting is out of range or inconsistent with another."""


class CrystalsegWarning(UserWarning):
    """Something the caller should change, though the result is still usable."""
