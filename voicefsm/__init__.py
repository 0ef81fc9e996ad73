"""voicefsm: phone conversations as statecharts.

The public API is small; everything else is reached by its module path.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
