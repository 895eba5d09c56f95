"""`python -m services.aiod_uploader`: run the AIoD uploader until SIGINT/SIGTERM."""

import sys

from services.aiod_uploader.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        uploader = build()
    except SettingsError as exc:
        sys.exit(f"aiod_uploader: {exc}")
    uploader.service.run()


if __name__ == "__main__":
    main()
