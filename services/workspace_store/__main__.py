"""`python -m services.workspace_store`: run the workspace store until SIGINT/SIGTERM."""

import sys

from services.workspace_store.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        store = build()
    except SettingsError as exc:
        sys.exit(f"workspace_store: {exc}")
    store.service.run()


if __name__ == "__main__":
    main()
