"""The maths of Gatys et al. style transfer: torch and Pillow only, no I/O, no service.

`Stylizer` runs a job described by `StyleParams` on the device chosen by `EngineOptions`.
"""
from .optimize import Cancelled, Progress, StyleResult, Stylizer
from .params import EngineOptions, ParamError, StyleParams

__all__ = ["Cancelled", "EngineOptions", "ParamError", "Progress", "StyleParams", "StyleResult", "Stylizer"]
