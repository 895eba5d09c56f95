"""`python -m services.gateway`: run the gateway until SIGINT/SIGTERM."""

import sys

from services.gateway.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        gateway = build()
    except SettingsError as exc:
        sys.exit(f"gateway: {exc}")
    gateway.service.run()


if __name__ == "__main__":
    main()
