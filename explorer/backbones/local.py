"""Local checkpoints: files and folders, read safely.

``.safetensors`` is read first and always safely. Pickle files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) are read
only with ``torch.load(weights_only=True)``, which refuses any file whose unpickling would run code: such a file
raises :class:`~explorer.UnsafeCheckpointError` and nothing in it is executed.

A folder is a transformers ``save_pretrained`` folder (``config.json`` with a ``model_type``), a timm folder
(``config.json`` with an ``architecture``), or a folder with one weights file and ``arch=`` naming the model.

Example::

    >>> import tempfile, safetensors.torch, timm
    >>> path = f"{tempfile.mkdtemp()}/resnet18.safetensors"
    >>> safetensors.torch.save_file(timm.create_model("resnet18").state_dict(), path)
    >>> load_local(path, arch="resnet18", device="cpu").weights
    'file'
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from ._base import Backbone
from ._checkpoint import find_weights_file, folder_config, load_weights, read_state_dict
from .hf import load_hf
from .timm import build_timm, load_timm_folder, timm_backbone

__all__ = ["load_local"]


def load_local(path: str | Path, *, pretrained: bool = True, arch: str | None = None, **options) -> Backbone:
    """A backbone from a local checkpoint file or folder.

    Args:
        path: a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` file, or a folder (see the module docs).
        pretrained: load the file's weights (True) or only use the folder's configuration (False).
        arch: the timm architecture the weights belong to; needed for bare weight files.
        options: ``device``, ``out_indices``, ``out_features``, and keyword arguments for the model.

    Raises:
        CheckpointError: unreadable, no ``arch=`` for a bare file, or weights that do not fit ``arch``.
        UnsafeCheckpointError: a pickle file that would run code.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        config = folder_config(path)
        if not config and (path / "config.json").is_file():
            raise CheckpointError(
                f"{path / 'config.json'} is not a JSON object (truncated or not JSON). Fix or delete it: a "
                "transformers folder's config.json has a model_type, a timm folder's an architecture."
            )
        if "model_type" in config:
            return load_hf(str(path), pretrained=pretrained, **options)
        if "architecture" in config:
            return load_timm_folder(path, pretrained=pretrained, **options)
        weights_file = find_weights_file(path)
    elif path.is_file():
        weights_file = path
    else:
        raise CheckpointError(f"No file or folder at {path}.")
    if arch is None:
        raise CheckpointError(
            f"{weights_file} holds bare weights; say which timm architecture they belong to, e.g. "
            f'load_backbone("{path}", arch="resnet18").'
        )
    model_kwargs = {k: v for k, v in options.items() if k not in ("device", "out_indices", "out_features")}
    backbone_options = {k: v for k, v in options.items() if k in ("device", "out_indices", "out_features")}
    model = build_timm(arch, **model_kwargs)
    origin, note = "random", ""
    if pretrained:
        state = read_state_dict(weights_file, model)
        head = getattr(model, "pretrained_cfg", {}).get("classifier")
        if head and not any(k.startswith(f"{head}.") for k in state):
            model.reset_classifier(0)
        note = load_weights(model, state, str(weights_file))
        origin = "file"
    return timm_backbone(model, spec=str(path), weights=origin, weights_note=note, **backbone_options)
