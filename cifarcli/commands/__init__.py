"""One module per subcommand: load config -> call the library -> write artifacts -> print paths."""
