"""``python -m captum_sscam``: forwards to the command line, ``captum_sscam.apps.cli``."""

from captum_sscam.apps.cli import main

raise SystemExit(main())
