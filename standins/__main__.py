"""``python -m standins ROLE --port N``."""

from ._cli import main

raise SystemExit(main())
