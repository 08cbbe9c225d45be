"""The ``beam-ml`` command line."""
