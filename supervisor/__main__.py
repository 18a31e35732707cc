"""``python -m supervisor`` is the ``supervisor`` command."""

import sys

from ._entry import main

sys.exit(main())
