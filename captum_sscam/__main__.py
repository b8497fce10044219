"""``python -m captum_sscam``: the ``captum-sscam`` command line."""

from captum_sscam.cli import main

raise SystemExit(main())
