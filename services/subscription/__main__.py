"""``python -m services.subscription``: serve subscriptions on settings.subscription_port.

``python -m services.subscription migrate`` applies the store's migrations and exits (start-up
applies them too; this is for a deploy step that runs before the new replicas start).
"""

import sys

from services.subscription.app import main, migrate_main

if __name__ == "__main__":
    if sys.argv[1:] == ["migrate"]:
        migrate_main()
    elif sys.argv[1:]:
        sys.exit("usage: python -m services.subscription [migrate]")
    else:
        main()
