"""USB4STREAM over the cable: ConfigFS streams, the HopID rule, the stream link."""

from recovery.link.tbstream.link import Host, open_link, open_streams

__all__ = ["Host", "open_link", "open_streams"]
