"""The `lau` command: parsing, output and exit codes, and what each command does."""
