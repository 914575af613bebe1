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

    ``image`` is a path, a PIL image, or a float tensor ``(3, H, W)`` already in [-1, 1]. The
    shorter side is resized to ``size`` (bicubic) and the centre cropped. A tensor is never
    clamped: values a little outside [-1, 1] (up to +-2, e.g. pixel noise) are kept as they are;
    integer, non-finite or far out-of-range tensors are refused. Raises ``ValueError`` with one
    line for a file that is missing or not an image, or a tensor that is not an image.
    """
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        pixels = _check_tensor(image)
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
    pixels = pixels[:, top : top + size, left : left + size]
    # Files are 8-bit: clamp the resampling overshoot. Tensors are taken as given, never clamped.
    return pixels if is_tensor else pixels.clamp(-1, 1)


# Image tensors are in [-1, 1]; a little beyond is allowed (e.g. pixel noise on a saturated
# colour, as in the shapes world), far beyond is an image in another scale (0-255, say).
TENSOR_LIMIT = 2.0


def _check_tensor(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) == 0:
        raise ValueError(f"an image tensor must have shape (3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(
            f"an image tensor must be floating point in [-1, 1], got {image.dtype} "
            "(for 0-255 values use x.float() / 127.5 - 1)"
        )
    if not torch.isfinite(image).all():
        raise ValueError("the image tensor contains NaN or inf")
    low, high = image.min().item(), image.max().item()
    if low < -TENSOR_LIMIT or high > TENSOR_LIMIT:
        raise ValueError(
            f"image tensor values must lie in [-1, 1], found [{low:.3g}, {high:.3g}] "
            "(for 0-255 values use x / 127.5 - 1)"
        )
    return image.float()
