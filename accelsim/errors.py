"""Exception types. Every message is one line meant for a user: it names the file,
the key or the layer, and what was expected. Only the CLI turns them into exit codes."""


class AccelsimError(Exception):
    """Base class for all errors accelsim raises on bad input."""


class ConfigError(AccelsimError):
    """A hardware config, energy table or sweep spec is invalid."""


class TraceError(AccelsimError):
    """A trace directory, manifest or tensor is invalid."""


class SimulationError(AccelsimError):
    """A layer cannot be simulated on the given hardware (e.g. an N:M violation)."""


class OutputError(AccelsimError):
    """An output file name, format or result file that cannot be written or read."""


class PrecisionWarning(UserWarning):
    """The config's operand width is narrower than a trace's quantised values: bytes and
    MAC energy are counted at the config's width, not the data's."""


def did_you_mean(word: object, choices: object) -> str:
    """``" (did you mean 'latency_s'?)"`` for the closest of ``choices`` to ``word``
    (difflib, cutoff 0.6), or ``""`` when none is close; for one-line error messages."""
    import difflib

    if not isinstance(word, str) or len(word) > 200:
        return ""
    names = [c for c in choices if isinstance(c, str)]  # type: ignore[attr-defined]
    close = difflib.get_close_matches(word, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def safe_text(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates, e.g. from a manifest's
    ``"\\udc80"`` or a non-UTF-8 file name) written as ``\\udc80`` escapes, so that a
    name can go into a DataFrame, a CSV, JSON or Parquet file and a terminal."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
