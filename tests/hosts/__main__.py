"""``python -m tests.hosts`` (``make run-hosts``): the page-across-hosts lab, figures printed.

Needs root, iproute2, iptables, redis-server and PostgreSQL's server binaries (make system-deps),
a trained model (``MARQUEE_MODEL_DIR``, default var/models) and the catalog data.
"""

import json
import sys
from pathlib import Path

from services.catalog.store import build_catalog_db
from services.platform.settings import Settings
from tests.hosts.lab import run_lab, unavailable_reason


def main() -> None:
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run the hosts lab here: {reason}")
    settings = Settings.from_env()
    build_catalog_db(settings.data_dir, settings.catalog_db)
    print("building hosts, shaping links, running 38 s of pages ...", flush=True)
    figures = run_lab(Path(settings.model_dir), Path(settings.catalog_db))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
