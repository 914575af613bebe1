"""Reading images into model-ready tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError


def load_image(image: Any, size: int) -> torch.Tensor:
    """An RGB image as a tensor ``(3, size, size)`` in [-1, 1].

    ``image`` is a path, a PIL image, or a tensor ``(3, H, W)`` already in [-1, 1]. The shorter
    side is resized to ``size`` (bicubic) and the centre cropped. Raises ``ValueError`` with one
    line for a file that is missing or not an image.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must have shape (3, H, W), got {tuple(image.shape)}")
        pixels = image.float()
    else:
        if isinstance(image, (str, Path)):
            try:
                with Image.open(image) as opened:
                    image = opened.convert("RGB")
            except (OSError, UnidentifiedImageError) as err:
                reason = "not an image" if isinstance(err, UnidentifiedImageError) else err.strerror
                raise ValueError(f"cannot read image {str(image)!r}: {reason}") from None
        if not isinstance(image, Image.Image):
            raise ValueError(f"expected an image path, PIL image or tensor, got {type(image)}")
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        pixels = torch.from_numpy(array).permute(2, 0, 1)
    _, h, w = pixels.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        pixels = F.interpolate(
            pixels[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return pixels[:, top : top + size, left : left + size].clamp(-1, 1)
