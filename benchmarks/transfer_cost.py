"""What detection and restoration add to a run (issue 33).

    python benchmarks/transfer_cost.py

- The classical references every pre-trained run now gets (``mimbench.classical``): milliseconds
  per image of biharmonic inpainting (scikit-image, CPU, one image at a time) and of mean-fill, on
  one-channel images of 28, 56, 112 and 224 px under random 4 px patch masking at 0.6.
- The ``detection`` and ``restoration`` probes on 1,000 / 1,000 ``fashion-mosaic`` canvases of 56 px
  (the embedded subset) read through quick's ViT (2 blocks, 64-d, untrained) and through raw pixels:
  seconds per probe call, features extracted before the clock starts for ``detection`` (shared with
  the other grid probes), inside it for ``restoration`` (it reads its own bicubic inputs).
"""

from __future__ import annotations

import time

import torch

from mimbench.classical import biharmonic_fill, mean_fill
from mimbench.data import Normalizer, to_device_images
from mimbench.probing import ProbeContext, RawPixels
from mimbench_plugins.detection_probe import DetectionProbe
from mimbench_plugins.mosaic import fashion_mosaic
from mimbench_plugins.restoration_probe import RestorationProbe
from mimbench_plugins.vit import ViTEncoder


def per_image_ms(fill, size: int, count: int) -> float:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 1, size, size, generator=generator)
    patches = torch.rand(count, size // 4, size // 4, generator=generator) < 0.6
    mask = patches.repeat_interleave(4, 1).repeat_interleave(4, 2)
    started = time.perf_counter()
    fill(images, mask)
    return (time.perf_counter() - started) * 1000 / count


def main() -> None:
    torch.manual_seed(0)
    print("classical references, ms per image (1 channel, 4 px patches at 0.6):")
    for size, count in ((28, 400), (56, 200), (112, 50), (224, 10)):
        print(f"  {size:>3} px: biharmonic {per_image_ms(biharmonic_fill, size, count):7.1f}  "
              f"mean-fill {per_image_ms(mean_fill, size, count):6.3f}")
    device = torch.device("cpu")
    train = to_device_images(fashion_mosaic("train", num_images=1000), 56, device)
    test = to_device_images(fashion_mosaic("test", num_images=1000), 56, device)
    normalize = Normalizer.measure(train)
    encoders = {"vit (2 blocks, 64-d, untrained)": ViTEncoder(1, 56, patch_size=4, dim=64, depth=2, heads=4),
                "raw pixels": RawPixels(1, 56)}
    print("probes on 1,000 / 1,000 mosaics of 56 px, seconds per call:")
    for name, encoder in encoders.items():
        context = ProbeContext(encoder.eval(), train, test, normalize, device, seed=0, batch_size=256)
        context.grids("train"), context.grids("test")  # shared with the other grid probes of a run
        for probe in (DetectionProbe(), RestorationProbe()):
            started = time.perf_counter()
            scores = probe(context)
            shown = {k: round(v, 3) for k, v in scores.items() if k in ("det_map", "det_map50", "sr_gain_psnr")}
            print(f"  {name:<32} {type(probe).__name__:<17} {time.perf_counter() - started:5.1f} s  {shown}")


if __name__ == "__main__":
    main()
