"""Reading images into model-ready tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# How an image is brought to a square: "crop" (the shorter side resized to the size, then the
# centre cropped; the default) or "squash" (resized to size x size whatever its aspect ratio, as
# Kong et al. prepare COCO for their localization and intervention experiments).
FITS = ("crop", "squash")


def load_image(image: Any, size: int, fit: str = "crop") -> torch.Tensor:
    """:func:`prepare_image`'s pixels alone."""
    return prepare_image(image, size, fit)[0]


def check_fit(fit: str) -> str:
    """``fit`` if it is one of :data:`FITS`, else ``ValueError``."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {FITS}")
    return fit


def prepare_image(image: Any, size: int, fit: str = "crop") -> tuple[torch.Tensor, str | None]:
    """An RGB image as a tensor ``(3, size, size)`` in [-1, 1].

    ``image`` is a path, a PIL image, a lazy image (an object whose ``open()`` gives a PIL image
    and raises ``ValueError`` with one line when it cannot, as an image stored in a parquet
    file: ``evaluate.released.ParquetImage``), or a float tensor ``(3, H, W)`` already in [-1,
    1]. With ``fit="crop"`` (the default) the shorter side is resized to ``size`` (bicubic) and
    the centre cropped; with ``fit="squash"`` the image is resized to ``size x size`` whatever
    its aspect ratio (bilinear with antialiasing, as PIL's ``resize(..., BILINEAR)`` of the
    paper's preprocessing), so nothing is cut off. A tensor is never clamped: values a little
    outside [-1, 1] (up to +-2, e.g. pixel noise) are kept as they are; integer, non-finite or
    far out-of-range tensors are refused. Raises ``ValueError`` with one line for a file that is
    missing or not an image, or a tensor that is not an image.

    Returns the pixels and what was done to fit them (``"centre-cropped 640x480 to 480x480,
    resized to 512x512"``; None when the image already had the size), to be shown beside them.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}")
    check_fit(fit)
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        pixels = _check_tensor(image)
    else:
        if isinstance(image, (str, Path)):
            image = _open(Path(image))
        elif is_lazy_image(image):
            image = image.open()
        if not isinstance(image, Image.Image):
            raise ValueError(
                f"expected an image path, PIL image or tensor, got {type(image).__name__}"
            )
        pixels = torch.from_numpy(_rgb(image)).permute(2, 0, 1)
    _, h, w = pixels.shape
    if fit == "squash":
        if (h, w) != (size, size):
            square = (size, size)
            pixels = F.interpolate(
                pixels[None], size=square, mode="bilinear", align_corners=False, antialias=True
            )[0]
        note = None if (h, w) == (size, size) else f"squashed {w}x{h} to {size}x{size}"
        return (pixels if is_tensor else pixels.clamp(-1, 1)), note
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        pixels = F.interpolate(
            pixels[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    pixels = pixels[:, top : top + size, left : left + size]
    steps = []
    if h != w:
        side = min(h, w)
        steps.append(f"centre-cropped {w}x{h} to {side}x{side}")
    if min(h, w) != size:
        steps.append(f"resized {'' if h != w else f'{w}x{h} '}to {size}x{size}")
    note = ", ".join(steps) or None
    # Files are 8-bit: clamp the resampling overshoot. Tensors are taken as given, never clamped.
    return (pixels if is_tensor else pixels.clamp(-1, 1)), note


def is_lazy_image(image: Any) -> bool:
    """Whether ``image`` is a lazy image: not a path, PIL image or tensor, but an object with an
    ``open()`` method giving a PIL image."""
    if isinstance(image, (str, Path, Image.Image, torch.Tensor)):
        return False
    return callable(getattr(image, "open", None))


def _open(path: Path) -> Image.Image:
    """The decoded image at ``path``, or ``ValueError`` saying in one line why not."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.copy()
    except Image.DecompressionBombError:
        raise ValueError(
            f"cannot read image {str(path)!r}: larger than {Image.MAX_IMAGE_PIXELS} pixels "
            "(PIL's decompression-bomb limit)"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"cannot read image {str(path)!r}: not an image") from None
    except OSError as err:  # missing, unreadable, truncated
        reason = err.strerror or str(err) or type(err).__name__
        raise ValueError(f"cannot read image {str(path)!r}: {reason}") from None


def _rgb(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` float32 in [-1, 1]. 8-bit modes go through RGB (alpha is dropped); 16- and
    32-bit integer greyscale is scaled by its bit depth, not clipped to 8 bits."""
    if image.mode.startswith("I"):  # "I;16", "I;16B", "I": 16-bit PNGs open as these
        grey = np.asarray(image, dtype=np.float64)
        depth = 65535.0 if image.mode.startswith("I;16") or grey.max() <= 65535 else 2**32 - 1
        grey = grey / depth * 2 - 1
        return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if image.mode == "F":
        raise ValueError("floating-point images (PIL mode F) are not read: save 8- or 16-bit")
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0


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
