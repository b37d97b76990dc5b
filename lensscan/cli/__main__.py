"""``python -m lensscan.cli``: the ``lensscan`` command."""

import sys

from lensscan.cli import main

sys.exit(main())
