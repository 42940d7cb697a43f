"""The `recovery` command: one module per subcommand, one error handler in main."""
