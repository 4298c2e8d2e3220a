"""One module per `xtl` subcommand; see `xtl.cli`."""
