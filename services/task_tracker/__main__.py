"""`python -m services.task_tracker`: run the task tracker until SIGINT/SIGTERM."""

import sys

from services.task_tracker.app import build
from shared.settings import SettingsError


def main() -> None:
    try:
        tracker = build()
    except SettingsError as exc:
        sys.exit(f"task_tracker: {exc}")
    tracker.service.run()


if __name__ == "__main__":
    main()
