"""USB4STREAM over the cable: ConfigFS streams, HopID agreement, the stream link."""

from recovery.link.tbstream.link import CONTROL_NAME, DATA_NAME, Host, open_link

__all__ = ["CONTROL_NAME", "DATA_NAME", "Host", "open_link"]
