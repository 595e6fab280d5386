"""``python -m recommender <command>``.

Offline commands live in :mod:`recommender.cli`. ``serve`` (the HTTP service) and ``worker``
(the batch worker) belong to other modules and are imported lazily, only when asked for, so
the offline tools never pull in the web stack.
"""

from __future__ import annotations

import importlib
import sys

# command -> "module:function"; each function is called with no arguments and reads sys.argv
# (rewritten to ``[prog, *rest]``) or its own settings
LAZY_COMMANDS = {
    "serve": "recommender.app:main",
    "worker": "recommender.batch_worker:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LAZY_COMMANDS:
        module_name, func_name = LAZY_COMMANDS[argv[0]].split(":")
        sys.argv = [f"python -m recommender {argv[0]}", *argv[1:]]
        result = getattr(importlib.import_module(module_name), func_name)()
        return int(result or 0)
    from recommender.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
