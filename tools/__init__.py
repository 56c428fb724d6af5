"""The `casfs` command line: one module per group of subcommands, `cli` ties them together."""
