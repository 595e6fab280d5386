"""``python -m bench [--only NAME] [--quick] [--json-out FILE]``."""

from bench.cli import main

raise SystemExit(main())
