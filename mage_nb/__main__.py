"""``python -m mage_nb``: the same as the ``mage-nb`` command."""

import sys

from .cli import main

sys.exit(main())
