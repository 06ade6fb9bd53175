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


def safe_text(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates, e.g. from a manifest's
    ``"\\udc80"`` or a non-UTF-8 file name) written as ``\\udc80`` escapes, so that a
    name can go into a DataFrame, a CSV, JSON or Parquet file and a terminal."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
