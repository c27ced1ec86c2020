"""Built-in prediction targets: what the decoder predicts at hidden positions.

``pixels`` and ``norm_pix`` (:mod:`.pixel_targets`, with ``fourier``), ``hog`` (:mod:`.hog_target`)
and ``ema_teacher`` (:mod:`.ema_teacher`); this module registers them all.
"""

from __future__ import annotations

from mimbench.plugin import hookimpl

from mimbench_plugins.ema_teacher import EMATeacher
from mimbench_plugins.hog_target import HOGTarget
from mimbench_plugins.pixel_targets import FourierTarget, NormPixTarget, PixelsTarget


@hookimpl
def mimbench_register_targets(register) -> None:
    register("pixels", PixelsTarget)
    register("norm_pix", NormPixTarget)
    register("hog", HOGTarget)
    register("fourier", FourierTarget)
    register("ema_teacher", EMATeacher)
