"""The ``torch-mi`` command line: subcommands that call library functions only."""
