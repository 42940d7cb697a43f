"""A clone fitted to a smaller or larger target: the plan (:mod:`recovery.disks.fitplan`), a copy-on-write
view of the source where the filesystems are resized and the partitions moved (view.py, resize.py), and
the fitted disk the sender reads instead of the source (fitted.py). The source is never written."""
