"""A clone fitted to a smaller or larger target: the plan (:mod:`recovery.disks.fitplan`), a copy-on-write
view of the source (view.py) where the filesystems are resized (resize.py; an XFS is copied file by file
into a smaller one, filecopy.py) and the partitions moved, and the fitted disk the sender reads instead of
the source (fitted.py). The source is never written."""
