"""``python -m supervisor`` is the ``supervisor`` command."""

import sys

from ._cli import main

sys.exit(main())
