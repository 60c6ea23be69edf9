"""One module per subcommand; each has `add_arguments(parser)` and `main(args) -> int`."""
