"""One exception tree for zarrport.

Every error a user can cause (bad input, a file that cannot be virtualized faithfully, a
source that changed) is a :class:`ZarrportError` with a stable ``code``. Each also inherits
the fitting built-in (``FileNotFoundError``, ``ValueError`` ...) so callers that catch the
built-in keep working. The CLI maps ``code`` to an exit status in one table
(:data:`EXIT_CODES`); nothing else in the package decides exit statuses.
"""

from __future__ import annotations


class ZarrportError(Exception):
    """Base of every error zarrport raises on purpose."""

    code: str = "zarrport_error"

    def __init__(self, message: str, *, variable: str | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.variable = variable
        self.source = source

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())


class SourceNotFoundError(ZarrportError, FileNotFoundError):
    """A source (or an output to open) does not exist."""

    code = "not_found"


class NotAFileError(ZarrportError, IsADirectoryError):
    """A directory (or prefix) was given where a file is expected."""

    code = "not_a_file"


class UnrecognizedFormatError(ZarrportError, ValueError):
    """The bytes are not a format zarrport reads (empty, random, unknown magic)."""

    code = "unrecognized_format"


class CorruptSourceError(ZarrportError, ValueError):
    """The file claims a known format but cannot be parsed (truncated, damaged)."""

    code = "corrupt_source"


class UnsupportedVariableError(ZarrportError, ValueError):
    """A variable cannot be referenced faithfully and is too large to inline."""

    code = "unsupported_variable"


class MisalignedChunksError(ZarrportError, ValueError):
    """Combining would put two sources' data into one chunk; kerchunk cannot express it."""

    code = "misaligned_chunks"


class IncompatibleSourcesError(ZarrportError, ValueError):
    """Sources disagree on how a variable is encoded (scale, fill, dtype, codecs, chunks)."""

    code = "incompatible_sources"


class OutputExistsError(ZarrportError, FileExistsError):
    """The output exists and ``overwrite`` was not requested."""

    code = "output_exists"


class OutputNotWritableError(ZarrportError, PermissionError):
    """The output location cannot be written."""

    code = "output_not_writable"


class InvalidArgumentError(ZarrportError, ValueError):
    """An option or argument has a value that cannot be used."""

    code = "invalid_argument"


class VerificationError(ZarrportError, AssertionError):
    """References do not read back what the sources hold, or a source changed."""

    code = "verification_failed"


class StorageError(ZarrportError, OSError):
    """The storage backend failed (permissions, network) after retries."""

    code = "storage_error"


class PartialFailureError(ZarrportError):
    """A batch finished, but some sources or collections failed (listed in its summary)."""

    code = "partial_failure"


class NeedsMigrationError(ZarrportError):
    """The output is in an older on-disk format that zarrport reads but does not write
    (an Icechunk 1 repository): ``zarrport migrate`` upgrades it."""

    code = "needs_migration"


class IncompleteOutputError(ZarrportError, ValueError):
    """A store whose writing (``zarrport convert``) has not finished: resume it by running the
    same command again."""

    code = "incomplete_output"


class SourceChangedError(VerificationError):
    """The source changed while it was being converted."""

    code = "source_changed"


class ForbiddenError(ZarrportError, PermissionError):
    """A URL outside what the service was configured to open (``zarrport serve --allow``)."""

    code = "forbidden"


class MissingExtraError(ZarrportError, ImportError):
    """The command needs an optional part of zarrport that is not installed."""

    code = "missing_extra"


#: Exit status per error code, for the CLI. 0 is success, 1 an unexpected failure.
EXIT_CODES: dict[str, int] = {
    "zarrport_error": 1,
    "invalid_argument": 2,
    "not_found": 3,
    "not_a_file": 3,
    "unrecognized_format": 4,
    "corrupt_source": 4,
    "unsupported_variable": 5,
    "misaligned_chunks": 5,
    "incompatible_sources": 5,
    "output_exists": 6,
    "output_not_writable": 6,
    "verification_failed": 7,
    "storage_error": 8,
    "partial_failure": 9,
    "needs_migration": 10,
    "missing_extra": 11,
    "incomplete_output": 12,
    "source_changed": 7,
    "forbidden": 13,
}


def exit_code(error: ZarrportError) -> int:
    return EXIT_CODES.get(error.code, 1)
