"""The `sage` command line."""
