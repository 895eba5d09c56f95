"""`python -m services.hf_collector`: run the Hugging Face collector until SIGINT/SIGTERM."""

import sys

from services.hf_collector.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        collector = build()
    except SettingsError as exc:
        sys.exit(f"hf_collector: {exc}")
    collector.service.run()


if __name__ == "__main__":
    main()
