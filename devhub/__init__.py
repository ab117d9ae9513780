"""devhub package."""
