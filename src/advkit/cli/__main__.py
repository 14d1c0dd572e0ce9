"""``python -m advkit.cli``: the same as the ``advkit`` command."""

from advkit.cli import main

main()
