"""``python -m accelsim``: the same as the ``accelsim`` command."""

from accelsim.cli.main import main

raise SystemExit(main())
