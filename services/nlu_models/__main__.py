"""`python -m services.nlu_models`: run the model service until SIGINT/SIGTERM."""

import sys

from services.nlu_models.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        models = build()
    except SettingsError as exc:
        sys.exit(f"nlu_models: {exc}")
    models.service.run()


if __name__ == "__main__":
    main()
