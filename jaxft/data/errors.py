"""The data module's user errors: each is one message saying what is wrong and what to do."""


class DataError(Exception):
    """A problem with the input data or its configuration (not a bug in jaxft)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The configured data set (or one of its splits) is not where jaxft looks for it."""


class BadImageError(DataError, ValueError):
    """An image file that cannot be decoded; the message names its path."""

    def __init__(self, message: str, paths: tuple[str, ...] = ()):
        super().__init__(message)
        self.paths = tuple(paths)


def tf_error_text(error: BaseException) -> str:
    """The readable line of a TensorFlow error: without the '{{function_node ...}}' prefix and
    the '[Op:...]' suffix, e.g. 'jpeg::Uncompress failed. Invalid JPEG data or crop window.'"""
    import re

    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    text = re.sub(r"\[\[.*?\]\]|\[Op:[^\]]*\](\s*name:\s*\S*)?", "", text, flags=re.S)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
