"""The slow, obviously correct stepping model: the test oracle for :mod:`accelsim.model`."""

from accelsim.reference.model import *  # noqa: F403
from accelsim.reference.model import __all__  # noqa: F401
