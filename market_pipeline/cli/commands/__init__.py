"""One module per `market-pipeline` command: each registers its own subcommand (`register`) and
sets the handler `main` calls with the parsed arguments. The modules stay light (argparse only):
`main` imports them all to build the parser, so a command's implementation is imported by its
handler, when it runs, and `market-pipeline --version` costs no import of Dagster or polars."""
