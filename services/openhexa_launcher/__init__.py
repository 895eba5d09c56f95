"""The OpenHexa launcher: lists pipelines, validates configs, launches, watches and stops runs."""
