"""Pretrained weights: from the Hugging Face cache with no network at all, and a one-line error
at once when they are not cached and the hub cannot be reached (no minute of retries)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import FIXTURES, assert_one_line_error, load_json, run_curate

pytestmark = pytest.mark.slow   # loads a model

MODEL = "vit_tiny_patch16_224"
DEMO = FIXTURES / "dedup_demo.json"
ROOT_IMAGES = FIXTURES / "images"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding random weights for MODEL where timm would download them."""
    import timm
    import torch
    from safetensors.torch import save_file
    repo = timm.models.get_pretrained_cfg(MODEL).hf_hub_id
    cache = tmp_path_factory.mktemp("hub")
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    torch.manual_seed(0)
    state = timm.create_model(MODEL, pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return cache, snapshot / "model.safetensors"


class CountingHub(BaseHTTPRequestHandler):
    requests: list = []

    def do_HEAD(self):
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def local_hub():
    """A hub endpoint on this machine that answers 404 and notes every request."""
    CountingHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), CountingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", CountingHub.requests
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dedup(tmp_path, name, *extra, env):
    """The CLI in a subprocess (the hub library reads its settings once, when imported), with
    no proxy: the hub is reached directly, or not at all."""
    from curate.plugins.pretrained import PROXY_VARIABLES
    out = tmp_path / name
    env = {**env, **{variable: "" for variable in PROXY_VARIABLES}}
    result = run_curate("dedup", DEMO, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "vit-cls",
                        "--model", MODEL, "--no-cache", *extra, env=env, subprocess_=True)
    return out, result


def test_cached_weights_are_used_without_asking_the_hub(tmp_path, hub_cache, local_hub):
    cache, weights = hub_cache
    endpoint, requests = local_hub
    env = {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"}
    out, result = dedup(tmp_path, "cached.json", env=env)
    assert result.returncode == 0, result.stderr
    assert requests == []                       # timm's own path asks the hub for a newer file first
    given, result = dedup(tmp_path, "given.json", "--weights", weights, env=env)
    assert result.returncode == 0, result.stderr
    assert load_json(out) == load_json(given)   # the same weights as --weights with the cached file


def test_uncached_weights_with_no_hub_is_one_line_error_at_once(tmp_path, hub_cache):
    cache, _ = hub_cache
    endpoint = f"http://127.0.0.1:{closed_port()}"
    _, result = dedup(tmp_path, "o.json", env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_ENDPOINT": endpoint,
                                              "HF_HUB_OFFLINE": "0"})
    line = assert_one_line_error(result, f"no weights for {MODEL}", "cannot be reached", "--weights", "timm-pool")
    assert endpoint in line and "Retrying" not in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_a_proxy_leaves_reaching_the_hub_to_it(monkeypatch):
    from curate.plugins import pretrained
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("connected around the proxy"))
    assert pretrained.hub_unreachable() is None


def test_an_unknown_model_is_named_as_such_not_as_missing_weights(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    out = tmp_path / "o.json"
    result = run_curate("dedup", DEMO, "-o", out, "--image-root", ROOT_IMAGES, "--embedder", "vit-cls",
                        "--model", "no_such_model", env={"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0"},
                        subprocess_=True)
    assert_one_line_error(result, "unknown timm model 'no_such_model'")
