"""``python -m supervisor`` is the ``supervisor`` command."""

import sys

from .cli import main

sys.exit(main())
