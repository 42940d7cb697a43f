"""Block-level cloning: the sender and receiver sessions and their pipelines.

Entry points are in :mod:`recovery.engine.api` (options) and
:func:`recovery.engine.send.send_disk` / :func:`recovery.engine.receive.receive_disk`.
"""
