"""Launching the import: the command line, the run's life cycle, and the runners."""
