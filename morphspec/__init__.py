"""morphspec: declare networks in YAML and grow trained checkpoints, keeping their function."""

from morphspec.api import build, grow, load, load_spec, resolve, save
from morphspec.arch import Arch
from morphspec.errors import MorphError
from morphspec.kinds import Kind, register_kind
from morphspec.probe import ProbeReport, probe  # torch-free at import, like api.py
from morphspec.spec import Spec

__version__ = "0.1.0"
__all__ = [
    "Arch",
    "Kind",
    "MorphError",
    "ProbeReport",
    "Spec",
    "__version__",
    "build",
    "grow",
    "load",
    "load_spec",
    "probe",
    "register_kind",
    "resolve",
    "save",
]
