"""The version reported as the instrumentation scope's version: the installed distribution's."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokentrail")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
