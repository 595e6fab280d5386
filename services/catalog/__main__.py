"""``python -m services.catalog``: serve the catalog on settings.catalog_port."""

from services.catalog.app import main

if __name__ == "__main__":
    main()
