"""Whole-image preprocessing for embedders, in core so that every embedder plugin shares it:
uniform borders (letterbox bars, padding to a square) are trimmed, then the whole picture,
never a centre crop, is resized to the model's square input. :class:`WholeImage` does it on
decoded images (PIL), :func:`preprocess_decoded` on tensors decoded on a device."""

from __future__ import annotations


# Uniform borders (letterbox bars, padding to a square) are cut before embedding, so that a
# padded or letterboxed copy looks like its original; a row or column counts as uniform when no
# channel varies along it by more than this (of 255).
BORDER_SPREAD = 24
# Device-decoded crops of one size are resized this many at a time, per device type: on a GPU
# grouping saves kernel launches (64 bounds the float copies); on the CPU one image at a time
# stays in cache and measured ~8% faster (bench/embed_throughput.py --device-decode).
RESIZE_GROUP = {"cuda": 64}


def content_box(image) -> tuple[int, int, int, int]:
    """The box inside uniform borders (left, top, right, bottom), at least 8 pixels a side."""
    import numpy as np
    height, width = image.height, image.width
    planes = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))   # (3, H, W): 10x faster reductions

    def spread(lines, axis):        # per row (axis 2) or column (axis 1): the largest channel range
        return (lines.max(axis=axis).astype(np.int16) - lines.min(axis=axis)).max(axis=0)

    rows = np.flatnonzero(spread(planes, 2) >= BORDER_SPREAD)
    top, bottom = (rows[0], rows[-1] + 1) if len(rows) else (0, height)
    if bottom - top < 8:
        top, bottom = 0, height
    columns = np.flatnonzero(spread(planes[:, top:bottom], 1) >= BORDER_SPREAD)
    left, right = (columns[0], columns[-1] + 1) if len(columns) else (0, width)
    if right - left < 8:
        left, right = 0, width
    return int(left), int(top), int(right), int(bottom)


def tensor_content_boxes(images) -> list[tuple[int, int, int, int]]:
    """:func:`content_box` of each (3, H, W) uint8 tensor, computed on their device: images of
    one shape in one stacked batch (a GPU's kernel launches follow the shapes, not the images),
    and one transfer of the boxes at the end (not a synchronisation per image)."""
    import torch
    groups = _positions_by_shape(images)
    found = torch.cat([_stacked_content_boxes(torch.stack([images[i] for i in members])) for members in groups])
    boxes: list = [None] * len(images)
    for i, box in zip([i for members in groups for i in members], found.cpu().tolist()):
        boxes[i] = tuple(box)
    return boxes


def _positions_by_shape(tensors) -> list[list[int]]:
    """The positions of ``tensors`` grouped by shape, each group in order (one batch each)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, tensor in enumerate(tensors):
        by_shape.setdefault(tuple(tensor.shape), []).append(i)
    return list(by_shape.values())


def _stacked_content_boxes(images):
    """(n, 4) boxes (left, top, right, bottom) of an (n, 3, H, W) uint8 batch, as
    :func:`content_box`: rows first, then columns among the content rows only."""
    import torch
    height, width = images.shape[-2:]

    def span(varies):                   # (n, L) bool -> first and one past the last True, or all of L
        length = varies.shape[1]
        at = torch.arange(length, device=varies.device)
        first = torch.where(varies, at, length).amin(dim=1)
        end = torch.where(varies, at, -1).amax(dim=1) + 1
        wide = end - first >= 8
        return torch.where(wide, first, 0), torch.where(wide, end, length)

    def varies(highs, lows):            # per line: does any channel range reach BORDER_SPREAD
        return (highs.int() - lows.int()).amax(dim=1) >= BORDER_SPREAD

    top, bottom = span(varies(images.amax(dim=3), images.amin(dim=3)))
    rows = torch.arange(height, device=images.device)
    inside = ((rows >= top[:, None]) & (rows < bottom[:, None]))[:, None, :, None]   # (n, 1, H, 1)
    left, right = span(varies(torch.where(inside, images, 0).amax(dim=2),
                              torch.where(inside, images, 255).amin(dim=2)))
    return torch.stack([left, top, right, bottom], dim=1)


class WholeImage:
    """Dedup's preprocessing: the whole picture, never a centre crop (a crop would drop the sides
    of wide images and keep the bars of letterboxed copies). Uniform borders are trimmed, then
    the rest is resized to the model's square input; the output is uint8 CHW (4x less to copy,
    and the float conversion and normalisation run batched in ``embed``). Output size is
    bounded whatever the input's shape. Small and picklable, for decode workers anywhere."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image):
        import numpy as np
        from PIL import Image
        image = image.crop(content_box(image))
        image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def preprocess_decoded(images, size: int):
    """:class:`WholeImage` on upright RGB uint8 (3, H, W) tensors already on the device
    (the device decoder's): borders trimmed, bicubic resize with antialiasing (as
    Pillow's), one uint8 (n, 3, size, size) batch. Crops of one size are resized together
    (a batch of photos holds few sizes), so the kernel launches follow the sizes, not the
    images; each group goes in slices of ``RESIZE_GROUP`` for the device."""
    import torch
    crops = [image[:, top:bottom, left:right]
             for image, (left, top, right, bottom) in zip(images, tensor_content_boxes(images))]
    out = torch.empty((len(crops), 3, size, size), dtype=torch.uint8, device=images[0].device)
    slice_size = RESIZE_GROUP.get(images[0].device.type, 1)
    for members in _positions_by_shape(crops):
        for start in range(0, len(members), slice_size):
            group = members[start:start + slice_size]
            batch = torch.stack([crops[i] for i in group]).float()
            resized = torch.nn.functional.interpolate(batch, size=(size, size), mode="bicubic",
                                                      align_corners=False, antialias=True)
            out[group] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out
