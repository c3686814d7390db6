"""Checkpoint sources: one module per format, each turning a path into the same header-only ``CheckpointIndex``.

- ``index``: the records every source fills (``TensorInfo``, ``CheckpointIndex``) and shared helpers.
- ``safetensors``: the strict header parser (readable here iff ``safe_open`` opens it).
- ``torch_pickle``: torch zip and legacy pickles, ``torch.load(weights_only=True)`` only; wrapper dicts.
- ``sharded``: ``*.index.json`` over shard files of any single-file format.
- ``hf_folder``: the weights file ``from_pretrained`` picks in a model folder.
- ``dcp``: torch.distributed.checkpoint folders (restricted unpickler for ``.metadata``; chunked reads).
- ``reader``: ``TensorReader``, one tensor's bytes at a time.

Which source opens a path is decided in ``explorer.core.checkpoint`` (``FOLDER_SOURCES``, ``FILE_SOURCES``); callers
import from there. This package imports nothing itself, so importing one source stays cheap.
"""
