"""Local disks: inventory, identity, used-block maps and the safety checks."""
