"""``python -m tests.observability.schemathesis_cli run ...``: the schemathesis CLI with
``ast.parse`` serialised across threads.

Why: CPython 3.11 keeps the AST validator's recursion depth in shared state, so two threads
parsing at once can fail with "SystemError: AST constructor recursion depth mismatch"
(python/cpython#106905, fixed in later versions). Hypothesis parses lambda sources to describe
strategies while schemathesis generates in worker threads, and under load a fuzzing run died of
it now and then - a crash of the tool, not a finding about our services.
"""

from __future__ import annotations

import ast
import sys
import threading


def main() -> None:
    lock = threading.Lock()
    parse = ast.parse

    def serialised(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    ast.parse = serialised
    from schemathesis.cli import schemathesis

    sys.argv[0] = "schemathesis"
    sys.exit(schemathesis())


if __name__ == "__main__":
    main()
