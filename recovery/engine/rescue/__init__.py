"""Rescuing a failing source the way GNU ddrescue does: the passes, the mapfile, and which files
the unreadable areas hit."""
