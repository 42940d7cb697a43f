"""usb4-recovery: clone disks between two machines over a USB4/Thunderbolt cable."""

__version__ = "0.2.0"
SOFTWARE = f"usb4-recovery {__version__}"
