"""Every extension point of curate. A plugin implements any of these with ``@curate.hookimpl``;
the parameter names must be exactly those below (pluggy checks them when the plugin loads).

Each ``register_*`` hook receives a ``register`` callback; call it once per component, with a
class (curate instantiates it with no arguments) or an instance. What each component must
provide is its contract in :mod:`curate.contracts`; registration checks it. The bundled
formats, embedders and indexes are plugins that use exactly these hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("curate")
hookimpl = pluggy.HookimplMarker("curate")


@hookspec
def register_readers(register):
    """Register dataset readers: :class:`curate.Reader`, whose ``read(path, options)`` yields Samples."""


@hookspec
def register_writers(register):
    """Register dataset writers: :class:`curate.Writer`, whose ``write(samples, stream, options)``
    writes them and returns the count."""


@hookspec
def register_embedders(register):
    """Register embedder factories: :class:`curate.Embedder`, whose ``load(model, weights, device)``
    returns the loaded model (a :class:`curate.LoadedEmbedder`) that turns image batches into vectors."""


@hookspec
def register_indexes(register):
    """Register index kinds: :class:`curate.IndexKind`, whose ``new(dim, capacity, **options)``
    returns an empty :class:`curate.SimilarityIndex`."""


@hookspec
def register_signals(register):
    """Register near-duplicate signals besides the embedding: :class:`curate.Signal`, whose
    ``fingerprint(image, path)`` turns a decoded image into a short unit vector."""


@hookspec
def register_verifiers(register):
    """Register near-duplicate verifiers: :class:`curate.Verifier`, whose ``compare(kept, candidate)``
    confirms that a candidate pair the signals proposed is the same picture before an image goes."""


@hookspec
def register_filters(register):
    """Register dataset filters: :class:`curate.Filter`, a stage whose ``decide(item)`` keeps an
    item (None) or says why it goes (a dict, written to the exclusion file); ``curate filter
    --filter NAME[=VALUE]`` runs them."""


@hookspec
def register_commands(cli):
    """Add commands to the ``curate`` click group."""
