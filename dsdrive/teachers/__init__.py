"""Teachers that annotate planning samples (see :mod:`dsdrive.teachers.base`)."""
