"""Load plugins (bundled and third-party alike) and collect the components they register.

Every plugin, including curate's own formats, is found through the ``curate``
entry-point group, so the bundled plugins prove that the public hooks suffice.
A plugin that fails to import or whose hook raises is reported with a warning
naming its package; the others keep working.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType

import pluggy

from . import hookspecs
from .contracts import contract_problem
from .errors import CurateError, PluginConflictError
from .settings import RESERVED, values_for

ENTRY_POINT_GROUP = "curate"
# Comma-separated entry-point names; when set, only these plugins load (handy for debugging).
ONLY_ENV = "CURATE_PLUGINS"
# When set to 0, third-party plugins are ignored and only curate's own load.
THIRD_PARTY_ENV = "CURATE_LOAD_THIRD_PARTY"
KINDS = ("reader", "writer", "embedder", "index", "signal", "verifier", "filter")
_HOOK_OF_KIND = {"reader": "register_readers", "writer": "register_writers",
                 "embedder": "register_embedders", "index": "register_indexes", "signal": "register_signals",
                 "verifier": "register_verifiers", "filter": "register_filters"}


@dataclass
class PluginInfo:
    name: str            # entry-point name
    package: str         # distribution that declares it
    version: str
    module: str
    error: str | None = None


@dataclass
class Component:
    kind: str
    name: str
    obj: object
    plugin: PluginInfo

    @property
    def description(self) -> str:
        return (getattr(self.obj, "description", None) or (self.obj.__doc__ or "").strip().split("\n")[0])


@dataclass
class Registry:
    plugins: list[PluginInfo] = field(default_factory=list)
    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    conflicts: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    settings: dict[str, tuple] = field(default_factory=dict)    # setting name -> (Setting, package, who)
    warnings: list[str] = field(default_factory=list)
    broken: dict[tuple[str, str], str] = field(default_factory=dict)   # components that fail their contract
    manager: pluggy.PluginManager | None = None
    cli_prepared: bool = False      # the commands have this registry's format options and commands

    def get(self, kind: str, name: str):
        """The component object registered as ``name``; a clear error when missing or ambiguous."""
        key = (kind, name)
        if key in self.conflicts:
            packages = " and ".join(sorted({f"{c.plugin.package} (plugin {c.plugin.name!r})"
                                            for c in self.conflicts[key]}))
            raise PluginConflictError(f"{kind} {name!r} is registered by both {packages}; "
                                      f"uninstall one of them")
        try:
            return self.components[kind][name].obj
        except KeyError:
            if key in self.broken:
                raise CurateError(self.broken[key]) from None
            known = ", ".join(sorted(self.components[kind])) or "none"
            raise CurateError(f"unknown {kind} {name!r} (installed: {known}; see `curate formats`)") from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])


def _entry_points():
    """Curate's entry points, once each even if a distribution is visible twice on sys.path."""
    seen = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        yield ep


def _plugin_info(ep, module: str) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    package = dist.metadata["Name"] if dist is not None else "unknown"
    version = dist.version if dist is not None else "?"
    return PluginInfo(ep.name, package, version, module)


def load_registry(extra_plugins=()) -> Registry:
    """Import every plugin and collect its components. ``extra_plugins``: modules or objects to add."""
    registry = Registry()
    pm = pluggy.PluginManager("curate")
    pm.add_hookspecs(hookspecs)
    registry.manager = pm
    only = {n.strip() for n in os.environ.get(ONLY_ENV, "").split(",") if n.strip()}
    third_party = os.environ.get(THIRD_PARTY_ENV, "1") != "0"

    loaded: list[tuple[object, PluginInfo]] = []
    for ep in _entry_points():
        if only and ep.name not in only:
            continue
        info = _plugin_info(ep, ep.value)
        if not third_party and info.package != "curate":
            continue
        registry.plugins.append(info)
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as e:  # a broken plugin must not take curate down
            info.error = f"failed to import: {type(e).__name__}: {_one_line(e)}"
            registry.warnings.append(f"plugin {ep.name!r} from package {info.package!r} {info.error}")
            continue
        loaded.append((plugin, info))
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name, "(registered in code)", "", name)
        registry.plugins.append(info)
        loaded.append((plugin, info))

    for plugin, info in loaded:
        try:
            pm.register(plugin, name=f"{info.package}:{info.name}")
        except Exception as e:  # pluggy's PluginValidationError (a misnamed hook argument), ValueError
            info.error = f"could not be registered: {_one_line(e)}"
            registry.warnings.append(f"plugin {info.name!r} from package {info.package!r} {info.error}")
            continue
        _collect(registry, plugin, info)
    return registry


def _collect(registry: Registry, plugin, info: PluginInfo) -> None:
    """Call one plugin's register hooks, each guarded so that its failure stays its own."""
    for kind, hook_name in _HOOK_OF_KIND.items():
        function = getattr(plugin, hook_name, None)
        if function is None or not hasattr(function, "curate_impl"):
            continue

        def register(component, _kind=kind):
            _add(registry, _kind, component, info)

        try:
            function(register)
        except Exception as e:
            message = f"{hook_name} raised {type(e).__name__}: {_one_line(e)}"
            info.error = message
            registry.warnings.append(f"plugin {info.name!r} from package {info.package!r}: {message}")


def setting_clash(registry: Registry, kind: str, name: str, component, info: PluginInfo) -> str | None:
    """Why ``component``'s settings cannot be registered: a name that a component of another
    package (or of the same one, declared otherwise) already declares, or one of curate's own
    options. None when they can; they are then recorded."""
    who = f"{kind} {name!r} from package {info.package!r}"
    mine = list(getattr(component, "settings", ()) or ())
    for one in mine:
        if one.name in RESERVED:
            return f"{who} declares the setting {one.name!r}, one of curate's own options"
        taken = registry.settings.get(one.name)
        if taken is not None and (taken[1] != info.package or taken[0] != one):
            return (f"{who} declares the setting {one.name!r}, which {taken[2]} from package {taken[1]!r} "
                    f"declares already; uninstall one of them")
    for one in mine:
        registry.settings.setdefault(one.name, (one, info.package, f"{kind} {name!r}"))
    return None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _add(registry: Registry, kind: str, component, info: PluginInfo) -> None:
    name = getattr(component, "name", None)
    if not isinstance(name, str) or not name:
        registry.warnings.append(f"plugin {info.name!r} from package {info.package!r} registered a "
                                 f"{kind} without a name; ignored")
        return
    problem = contract_problem(kind, component)
    if problem:
        message = f"{kind} {name!r} from package {info.package!r} (plugin {info.name!r}) {problem}"
        registry.broken[(kind, name)] = message
        registry.warnings.append(f"{message}; ignored")
        return
    clash = setting_clash(registry, kind, name, component, info)
    if clash:
        registry.broken[(kind, name)] = clash
        registry.warnings.append(f"{clash}; ignored")
        return
    obj = component() if isinstance(component, type) else component
    if kind in ("signal", "verifier") and obj.settings:
        obj.values = MappingProxyType(values_for(obj, {}))    # its defaults until a run configures a copy
    new = Component(kind, name, obj, info)
    existing = registry.components[kind].get(name)
    if existing is None:
        registry.components[kind][name] = new
        return
    registry.conflicts.setdefault((kind, name), [existing]).append(new)
    registry.warnings.append(f"{kind} {name!r} is registered by both package {existing.plugin.package!r} "
                             f"and package {info.package!r}")


def register_commands(registry: Registry, cli) -> None:
    """Let every plugin add its commands to the click group (failures become warnings)."""
    for impl in registry.manager.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli)
        except Exception as e:
            registry.warnings.append(f"plugin {impl.plugin_name!r}: register_commands raised "
                                     f"{type(e).__name__}: {e}")


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def reset_registry() -> None:
    global _REGISTRY
    _REGISTRY = None


def describe(kind: str, component) -> str:
    """``reader 'x' from package 'y'``, for messages about a component."""
    name = getattr(component, "name", None) or type(component).__name__
    registered = _REGISTRY.components[kind].get(name) if _REGISTRY is not None else None
    package = registered.plugin.package if registered is not None and registered.obj is component else None
    return f"{kind} {name!r}" + (f" from package {package!r}" if package else "")


def describe_name(kind: str, name: str) -> str:
    """``embedder 'x' from package 'y'`` for the component registered as ``name`` (a loaded
    model knows its embedder's name, not the object)."""
    registered = _REGISTRY.components[kind].get(name) if _REGISTRY is not None else None
    return describe(kind, registered.obj) if registered is not None else f"{kind} {name!r}"


@contextmanager
def plugin_call(kind: str, component, upstream: list | None = None):
    """Run a plugin's code; an exception that is not a CurateError becomes one that names the
    plugin and its package (the user can report it to the right people). ``upstream`` holds
    exceptions raised by curate's own generators that the plugin was consuming: those pass
    through unchanged."""
    try:
        yield
    except CurateError:
        raise
    except Exception as e:
        if upstream and e is upstream[-1]:
            raise
        raise CurateError(f"{describe(kind, component)} failed: {type(e).__name__}: {_one_line(e)}") from e
