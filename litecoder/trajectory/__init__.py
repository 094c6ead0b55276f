"""Trajectories: Harbor's ATIF files -> a scaffold-neutral form (`neutral`) -> chat records in
a chosen SFT format (`formats`, a registry: one module per format), checked against the
student's chat template (`template_check`)."""

from litecoder.trajectory import template_check
from litecoder.trajectory.formats import FORMATS, Format, read_commands, render
from litecoder.trajectory.neutral import Trajectory, Turn, load_atif

__all__ = [
    "FORMATS",
    "Format",
    "Trajectory",
    "Turn",
    "load_atif",
    "read_commands",
    "render",
    "template_check",
]
