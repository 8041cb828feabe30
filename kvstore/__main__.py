"""``python -m kvstore``: the same as the ``kvstore`` command."""

import sys

from .cli import main

sys.exit(main())
