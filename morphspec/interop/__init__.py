"""Hugging Face folders in and out: declared key maps and config mappings per family.

`import_hf` writes a spec that reads a folder as it is; `open_checkpoint` is the reader every
command uses (a key-mapping view for HF folders); `export_hf` writes a folder that
`transformers` loads. Only JSON and safetensors are used: transformers is not needed.
"""

from morphspec.interop.exporter import ExportResult, export_hf
from morphspec.interop.folder import HFFolder, open_checkpoint
from morphspec.interop.importer import ImportResult, import_hf
from morphspec.interop.registry import BY_MODEL_TYPE, BY_NAMING, FAMILIES

__all__ = [
    "BY_MODEL_TYPE",
    "BY_NAMING",
    "FAMILIES",
    "ExportResult",
    "HFFolder",
    "ImportResult",
    "export_hf",
    "import_hf",
    "open_checkpoint",
]
