"""``python -m pipeline <verb>``: see ``pipeline.cli``."""

import sys

from .cli import main

sys.exit(main())
