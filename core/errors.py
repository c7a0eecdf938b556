"""Typed exceptions. Every message is written for the person using the app: what is wrong and what to do.

The UI shows ``str(error)`` for any ``ChestReviewError`` and never a stack trace.
"""


class ChestReviewError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(ChestReviewError):
    """The uploaded file cannot be analysed."""


class UnreadableFileError(InputError):
    """Corrupt, truncated, empty or not an image at all."""


class UnsupportedInputError(InputError):
    """A readable image that is not a frontal chest X-ray (CT/MR, lateral view, other body part...)."""


class ImageTooSmallError(InputError):
    """Too few pixels for the models to see anything."""


class FileTooLargeError(InputError):
    """Above the configured upload cap."""


class ModelError(ChestReviewError):
    """A model cannot be loaded or run."""


class UntrustedWeightsError(ModelError):
    """A weight file is missing from the registry manifest or its SHA-256 does not match."""


class ReviewLogError(ChestReviewError):
    """A review could not be stored or read."""


class SegmentationExportError(ChestReviewError):
    """A DICOM Segmentation cannot be made for this case (not uploaded as DICOM, or its header lacks what SEG needs)."""


class AuthError(ChestReviewError):
    """Signing in, a session or a user account failed (``core.auth``); the message never says whether a name exists."""


class ArchiveError(ChestReviewError):
    """Archive scoring (``core.archive``) cannot start or resume: no Ray, a damaged resume state, other columns."""
