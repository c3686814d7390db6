"""Checkpoint sources: one module per format, each turning a path into the same header-only ``CheckpointIndex``.

- ``index``: the records every source fills (``TensorInfo``, ``CheckpointIndex``) and shared helpers.
- ``safetensors``: the strict header parser (readable here iff ``safe_open`` opens it).
- ``torch_pickle``: torch zip and legacy pickles, ``torch.load(weights_only=True)`` only; wrapper dicts.
- ``sharded``: ``*.index.json`` over shard files of any single-file format.
- ``hf_folder``: the weights file ``from_pretrained`` picks in a model folder.
- ``dcp``: torch.distributed.checkpoint folders (restricted unpickler for ``.metadata``; chunked reads).
- ``zero``: DeepSpeed ZeRO folders, stages 1-3 (restricted unpickler for the model/optimizer-states pickles; the
  fp32 partitions consolidated as ``zero_to_fp32`` does, streamed piece by piece).
- ``torch_records``: torch zip files as records (tensor -> storage byte range) through an allow-list unpickler.
- ``mapped``: rank files mapped read-only, pages dropped once streamed (DCP, ZeRO).
- ``reader``: ``TensorReader``, one tensor's bytes at a time.

Which source opens a path is decided in ``explorer.core.checkpoint`` (``FOLDER_SOURCES``, ``FILE_SOURCES``); callers
import from there. This package imports nothing itself, so importing one source stays cheap.
"""
