"""One module per pipeline stage (``diffpose <stage>``): ``add_arguments(parser)`` and ``main(args)``."""
