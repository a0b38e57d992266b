"""The ``rls3`` command line (``rls3 --help``)."""

from rls3_ros.cli.main import main

__all__ = ["main"]
