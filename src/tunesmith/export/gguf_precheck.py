"""GGUF export's architecture check, made before the model is loaded.

Loading a run can take a minute (a GGUF base is dequantized to fp32 first), so an architecture the GGUF
writer does not support is refused from what the files say: the ``model_type`` in a folder's config.json,
or ``general.architecture`` in a GGUF base's header (read memory-mapped, without its tensors). Where neither
can be read (a hub id), the check after loading (``gguf.check_supported``) still says it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith import runs
from tunesmith.errors import UserError

# The writer's table (``export/gguf.py``'s SUPPORTED_ARCHS) is the one source of what is supported.


def refuse_unsupported(run_dir: Path) -> None:
    """Raise the same UserError as ``check_supported`` would after loading, before anything is loaded."""
    from tunesmith.export.gguf import unsupported_message

    found = run_architecture(run_dir)
    if found is not None and not found[1]:
        raise UserError(unsupported_message(found[0]))


def run_architecture(run_dir: Path) -> tuple[str, bool] | None:
    """(the architecture of the model a run's weights apply to, whether GGUF export supports it), or None."""
    info = runs.read_run(run_dir)
    if info.method == "full":
        return _folder_architecture(info.weights_path(run_dir))
    return source_architecture(info.base_model)


def source_architecture(name: str) -> tuple[str, bool] | None:
    import gguf

    from tunesmith.export.gguf import SUPPORTED_ARCHS
    from tunesmith.models.load import resolve

    source = resolve(name)
    if source.kind == "run":
        return run_architecture(Path(source.path))
    if source.kind == "gguf":
        reader = gguf.GGUFReader(source.path)
        field = reader.fields.get("general.architecture")
        if field is None:
            return None
        arch = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
        return arch, arch in {gguf.MODEL_ARCH_NAMES[a] for a in SUPPORTED_ARCHS.values()}
    if source.kind in ("alias", "folder"):
        return _folder_architecture(Path(source.path))
    return None


def _folder_architecture(folder: Path) -> tuple[str, bool] | None:
    from tunesmith.export.gguf import SUPPORTED_ARCHS

    try:
        kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return (str(kind), kind in SUPPORTED_ARCHS) if kind else None
