"""``python3 -m recovery.appliance console|serial|plan``: see :mod:`recovery.appliance`."""

import sys

from recovery.appliance.console import main

sys.exit(main())
