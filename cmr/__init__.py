"""The ``cmr`` command: the commands of each installed package under one name."""
