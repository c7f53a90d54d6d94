"""The terminal face: the ``baton`` command line and its views of runs."""
