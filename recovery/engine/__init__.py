"""Block-level cloning: the sender and receiver sessions and their pipelines.

Entry points are in :mod:`recovery.engine.api` (options) and
:func:`recovery.engine.clone.send.send_disk` / :func:`recovery.engine.clone.receive.receive_disk`.
"""
