"""The Hugging Face collector: dataset listings for the sync, and repository management."""
