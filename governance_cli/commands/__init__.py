"""The subcommands of ``governance``, one module per group; :mod:`governance_cli.main` adds
them to the root group."""
