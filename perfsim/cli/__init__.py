"""The ``perfsim`` command line.

:func:`perfsim.cli.main.main` builds an argparse parser whose subcommands live in modules
``perfsim.cli.<name>`` (``plan``, ``run``, ``sweep``, ...). Each such module exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed namespace and returning an exit status, or None for 0) with ``set_defaults``.
A module that does not exist yet is simply absent from the command line.

(The entry point is imported from ``perfsim.cli.main`` on purpose and not re-exported here:
a function ``main`` on the package would shadow the submodule ``perfsim.cli.main``.)
"""
