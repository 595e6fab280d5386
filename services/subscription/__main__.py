"""``python -m services.subscription``: serve subscriptions on settings.subscription_port."""

from services.subscription.app import main

if __name__ == "__main__":
    main()
