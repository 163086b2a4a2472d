"""Decode JPEGs where the model runs (nvJPEG through torchvision's batched ``decode_jpeg`` on
CUDA), so that on a GPU machine the CPU decoders stop being the limit (bench/README.md: 0.15
of EfficientNet-Lite0's forward rate and 0.70 of ViT-L/14-336's with 15 decode processes).

Worker threads only read files (and look up the EXIF orientation in the header); one more
thread (:class:`DecodeAhead`) decodes each batch on the device, turns it upright, and hands the
images to the embedder's ``preprocess_decoded`` (border trim and resize there too), while the
main thread runs the model on the batch before. Other formats, and
JPEGs the device decoder refuses, take the CPU path (Pillow) as before. The same code runs on
the CPU (libjpeg-turbo through torchvision), which is how it is tested without a GPU.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor

from .images import JPEG_MAGIC, UnreadableImage, open_image

# nvJPEG's pixels (and a resize on tensors) are not Pillow's: the cache keeps the vectors of this
# path apart (curate.cache.CacheIdentity.of_model).


def read_for_device(path) -> tuple[bytes | None, int, str | None]:
    """A file's bytes when it is a JPEG for the device decoder (else None: decode it on the
    CPU), its EXIF orientation (1-8), and the reason when the file cannot be used at all."""
    try:
        with open_image(path) as image:          # the same bounds as the CPU path: size, pixels
            if image.format != "JPEG":
                return None, 1, None
            orientation = image.getexif().get(0x0112, 1)
            image.fp.seek(0)                     # the whole file, through the same handle
            data = image.fp.read()
    except UnreadableImage as e:
        return None, 1, str(e)
    except Exception:  # noqa: BLE001 - a broken header is the CPU path's to explain
        return None, 1, None
    return (data if data.startswith(JPEG_MAGIC) else None), orientation, None


def upright(image, orientation: int):
    """A (C, H, W) tensor turned as Pillow's ``ImageOps.exif_transpose`` turns the image."""
    import torch
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def decode_batch(datas: list[bytes], device) -> list:
    """Each JPEG as an RGB uint8 (3, H, W) tensor on ``device``, or None where the decoder
    refuses it (a batch that fails is decoded one by one to find which)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # torchvision 0.29 points to TorchCodec
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        decoded = []
        for tensor in tensors:
            try:
                decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def supported(model) -> bool:
    """Whether the embedder can take device-decoded images, and torchvision can decode them."""
    if not callable(getattr(model, "preprocess_decoded", None)):
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


class DecodeAhead:
    """One thread that decodes the next batch on the device while the model runs the batch
    before, so that the two no longer add up. On an H200 (session 19) ViT-L/14-336 spent 66 ms
    per batch of 64 in its forward and 90 ms per batch in the pipeline, where the main thread
    decoded and resized between forwards.

    On CUDA the thread works on a stream of its own: ``result`` makes the model's stream wait
    for that batch's work (an event, not a synchronisation of the host), and marks the batch's
    tensors as used there, so that their memory is not handed out again before the model has
    read them. One thread is enough: torchvision decodes one batch at a time (a lock in its
    nvJPEG decoder), and two batches in flight hold the device's memory low."""

    def __init__(self, device):
        import torch
        self._torch = torch
        self._device = torch.device(device)
        self._stream = torch.cuda.Stream(self._device) if self._device.type == "cuda" else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-device-decode")

    def __enter__(self) -> "DecodeAhead":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)

    def submit(self, decode, *args) -> Future:
        """``decode(*args)`` on the decode thread; it returns a batch's prepared entries,
        (i, input, fingerprints, reason)."""
        return self._pool.submit(self._decode, decode, args)

    def _decode(self, decode, args):
        if self._stream is None:
            return decode(*args), None
        torch = self._torch
        with torch.cuda.stream(self._stream):
            prepared = decode(*args)
            done = torch.cuda.Event()
            done.record(self._stream)
        return prepared, done

    def result(self, future: Future) -> list:
        """The entries ``submit`` promised, ready for the model on the calling thread's stream
        (the decode's error, if it raised)."""
        prepared, done = future.result()
        if done is not None:
            stream = self._torch.cuda.current_stream(self._device)
            stream.wait_event(done)
            for _, model_input, _, _ in prepared:
                if isinstance(model_input, self._torch.Tensor) and model_input.is_cuda:
                    model_input.record_stream(stream)
        return prepared
