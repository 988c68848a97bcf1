"""``python -m dire`` is the ``dire`` command."""

import sys

from dire.cli import main

sys.exit(main())
