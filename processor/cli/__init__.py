"""The ``tokentrail`` command: one module per subcommand, listed explicitly in ``main``."""
