"""`python -m services.openhexa_launcher`: run the OpenHexa launcher until SIGINT/SIGTERM."""

import sys

from services.openhexa_launcher.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        launcher = build()
    except SettingsError as exc:
        sys.exit(f"openhexa_launcher: {exc}")
    launcher.service.run()


if __name__ == "__main__":
    main()
