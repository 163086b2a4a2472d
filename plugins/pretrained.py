"""Where a timm model's pretrained weights come from: the Hugging Face cache first, then the hub
when it can be reached.

Weights found in the cache are used as they are, without asking the hub for a newer upload
(curate's embedding cache keys pretrained vectors by the model's name, so a newer upload
would not be noticed by it anyway). When they are not cached, the hub is tried only if its
host answers: otherwise the hub library retries every file five times with backoff (about 50
s on a machine with no network) before curate can say what to do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0       # seconds the hub's host has to accept a connection
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def cached_weights(model_name: str) -> Path | None:
    """The file timm would download for ``model_name``'s pretrained weights (a safetensors
    alternative first, as timm asks for them), when the Hugging Face cache holds it."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg
        from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives, hf_split
    except ImportError:          # another timm or hub layout: timm's own download path decides
        return None
    config = get_pretrained_cfg(model_name)
    if config is None or not config.hf_hub_id:
        return None
    repo, revision = hf_split(config.hf_hub_id)
    filename = config.hf_hub_filename or HF_WEIGHTS_NAME
    names = [filename] if filename.endswith(".safetensors") else [*_get_safe_alternatives(filename), filename]
    for name in names:
        found = try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(found, str):
            return Path(found)
    return None


def hub_offline() -> bool:
    """Hugging Face's own switch: HF_HUB_OFFLINE=1 keeps everything local."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here (its host is unknown, or accepts
    no connection within ``CONNECT_TIMEOUT``), or None. Behind a proxy the answer is always
    None: reaching the hub is then the proxy's business."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    from huggingface_hub import constants
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=CONNECT_TIMEOUT):
            return None
    except OSError as e:
        return f"{constants.ENDPOINT} cannot be reached ({e.strerror or e})"
