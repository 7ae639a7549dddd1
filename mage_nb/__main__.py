"""``python -m mage_nb``: the same as the ``mage-nb`` command."""

from .cli import entry

entry()
