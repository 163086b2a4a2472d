"""The default embedder's forward pass on the CPU in ONNX Runtime (chosen by measurement, see
bench/README.md: on 2 cores EfficientNet-Lite0 at 160 px costs a third of torch's CPU, with
vectors equal to torch's to cosine 0.99999).

The model is exported from the timm model at run time (nothing is downloaded) and kept in
the model cache, ``$XDG_CACHE_HOME/curate/models`` beside the embedding cache, keyed by the
weights' digest and the input size. A run that finds it there never imports torch or timm
(seconds of start-up). Without onnxruntime (or the onnx package, which the export needs)
torch runs the model, and the run's warnings say so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from curate.embedding import LoadedEmbedder

EXPORT_VERSION = 1          # bump when the export changes: older cached models are then not used
MIN_COSINE = 0.999          # an exported model must give torch's vectors to at least this


def model_cache_dir() -> Path:
    """``$CURATE_MODEL_CACHE``, else ``$XDG_CACHE_HOME/curate/models`` (beside the embeddings)."""
    if os.environ.get("CURATE_MODEL_CACHE"):
        return Path(os.environ["CURATE_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "curate" / "models"


def onnxruntime_module():
    """onnxruntime, or None when it is not installed (then torch runs the model)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not Linux
        return max(1, os.cpu_count() or 1)


def cache_path(embedder: str, model_name: str, digest: str) -> Path:
    """Where the export of these weights is kept (the input size follows from the model's name)."""
    key = hashlib.sha256(f"{EXPORT_VERSION}|{embedder}|{model_name}|{digest}".encode()).hexdigest()[:24]
    return model_cache_dir() / f"{embedder}-{model_name.replace('/', '_')}-{key}.onnx"


class OnnxModel(LoadedEmbedder):
    """A timm embedder's model in ONNX Runtime: same preprocessing, same vectors, same cache key
    as the torch model it was exported from."""

    runtime = "onnxruntime"
    warnings: list = []

    def __init__(self, ort, model_bytes: bytes, meta: dict, preprocessor):
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, cpu_threads() - 1)     # a core is left to the decode threads
        options.inter_op_num_threads = 1
        # idle threads sleep rather than spin: spinning burnt the CPU the decode threads needed
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.embedder, self.model_name = meta["embedder"], meta["model_name"]
        self.weights_digest, self.dim, self.size = meta["weights_digest"], meta["dim"], meta["size"]
        self.short_side, self.default_threshold, self.device = self.size, meta["default_threshold"], "cpu"
        self.mean = np.asarray(meta["mean"], np.float32).reshape(1, 3, 1, 1) * 255
        self.std = np.asarray(meta["std"], np.float32).reshape(1, 3, 1, 1) * 255
        self._preprocessor = preprocessor

    def preprocess(self, image):
        return self._preprocessor(image)

    def preprocessor(self):
        return self._preprocessor

    def preprocess_decoded(self, images):
        """As the torch model's (``--decode device`` on the CPU)."""
        from curate.preprocess import preprocess_decoded
        return preprocess_decoded(images, self.size)

    def embed(self, batch):
        batch = (np.asarray(batch, np.float32) - self.mean) / self.std
        out = self.session.run(None, {self.input_name: batch})[0].astype(np.float32, copy=False)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def cached(ort, path: Path, preprocessing) -> OnnxModel | None:
    """The exported model kept at ``path``, or None when there is none (or it is unreadable).
    ``preprocessing``: the preprocessor's class, made for the model's input size."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        return OnnxModel(ort, path.read_bytes(), meta, preprocessing(meta["size"]))
    except Exception:  # noqa: BLE001 - a missing or damaged cache entry is exported again
        return None


def export(ort, torch_model, path: Path) -> tuple[OnnxModel | None, str | None]:
    """Export a loaded torch :class:`TimmModel`, check it gives the same vectors, keep it at
    ``path``: the ONNX model, or None and why not."""
    torch = torch_model.torch
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError:
        return None, "the onnx package (needed to export the model) is not installed"
    wrapper = _Features(torch, torch_model)
    example = torch.zeros(2, 3, torch_model.size, torch_model.size)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():       # the TorchScript exporter's deprecation: it needs no onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), buffer, input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, dynamo=False,
                              opset_version=17)
        meta = {"embedder": torch_model.embedder, "model_name": torch_model.model_name,
                "weights_digest": torch_model.weights_digest, "dim": torch_model.dim, "size": torch_model.size,
                "default_threshold": torch_model.default_threshold,
                "mean": torch_model.config["mean"], "std": torch_model.config["std"]}
        model = OnnxModel(ort, buffer.getvalue(), meta, torch_model.preprocessor())
    except Exception as e:  # noqa: BLE001 - any export failure leaves the run on torch
        return None, f"exporting the model to ONNX failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    probe = np.random.default_rng(0).integers(0, 256, (4, 3, torch_model.size, torch_model.size), dtype=np.uint8)
    cosine = float((model.embed(probe) * torch_model.embed(probe)).sum(axis=1).min())
    if not cosine >= MIN_COSINE:
        return None, f"the exported model's vectors differ from torch's (cosine {cosine:.4f})"
    _keep(path, buffer.getvalue(), meta)
    return model, None


def _keep(path: Path, model_bytes: bytes, meta: dict) -> None:
    """Write the model and its description atomically; a cache that cannot be written only
    costs the next run another export."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, data in ((path, model_bytes), (path.with_suffix(".json"), json.dumps(meta).encode())):
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            temporary.write_bytes(data)
            os.replace(temporary, target)
    except OSError:
        pass


def _Features(torch, torch_model):
    """The torch model as a module whose output is the embedder's features (before the L2
    normalisation, which runs in numpy)."""

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch_model.model

        def forward(self, images):
            return torch_model.owner.features(self.model, images)

    return Features().eval()
