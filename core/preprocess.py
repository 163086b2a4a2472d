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
    """:func:`content_box` of each (3, H, W) uint8 tensor, computed on their device with two
    transfers for the whole batch (not two synchronisations per image)."""
    import torch

    def spread_mask(image, dim):        # rows (dim=2) or columns (dim=1) whose colours vary
        return (image.amax(dim=dim).int() - image.amin(dim=dim).int()).amax(dim=0) >= BORDER_SPREAD

    def first_and_last(masks, lengths):   # the span from the first to the last hit of each mask
        if not masks:
            return []
        ends = []
        for mask in masks:
            at = torch.arange(mask.numel(), device=mask.device)
            ends.append(torch.stack([torch.where(mask, at, mask.numel()).min(), torch.where(mask, at, -1).max()]))
        spans = []
        for (first, last), length in zip(torch.stack(ends).cpu().tolist(), lengths):
            spans.append((first, last + 1) if last + 1 - first >= 8 else (0, length))
        return spans

    rows = first_and_last([spread_mask(image, 2) for image in images], [image.shape[1] for image in images])
    columns = first_and_last([spread_mask(image[:, top:bottom], 1) for image, (top, bottom) in zip(images, rows)],
                             [image.shape[2] for image in images])
    return [(left, top, right, bottom) for (top, bottom), (left, right) in zip(rows, columns)]


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
    by_size: dict[tuple, list[int]] = {}
    for i, crop in enumerate(crops):
        by_size.setdefault(tuple(crop.shape[-2:]), []).append(i)
    out = torch.empty((len(crops), 3, size, size), dtype=torch.uint8, device=images[0].device)
    slice_size = RESIZE_GROUP.get(images[0].device.type, 1)
    for members in by_size.values():
        for start in range(0, len(members), slice_size):
            group = members[start:start + slice_size]
            batch = torch.stack([crops[i] for i in group]).float()
            resized = torch.nn.functional.interpolate(batch, size=(size, size), mode="bicubic",
                                                      align_corners=False, antialias=True)
            out[group] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out
