"""Every extension point of curate. A plugin implements any of these with ``@curate.hookimpl``.

Each ``register_*`` hook receives a ``register`` callback; call it once per component
(a class or an instance with a ``name`` attribute). The bundled formats, embedders and
indexes are plugins that use exactly these hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("curate")
hookimpl = pluggy.HookimplMarker("curate")


@hookspec
def register_readers(register):
    """Register dataset readers: objects with ``name``, ``sniff(path, head)`` and ``read(path, options)``."""


@hookspec
def register_writers(register):
    """Register dataset writers: objects with ``name`` and ``write(samples, stream, options)``."""


@hookspec
def register_embedders(register):
    """Register image embedders: objects with ``name`` that turn image batches into vectors."""


@hookspec
def register_indexes(register):
    """Register similarity indexes: objects with ``name`` that find all pairs above a threshold."""


@hookspec
def register_commands(cli):
    """Add commands to the ``curate`` click group."""
