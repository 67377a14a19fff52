"""The shard store: LMDB shards + ``manifest.json``, written by ``fastload pack``.

Layout of a packed dataset directory::

    OUT/
      manifest.json          written last, atomically (temp file + fsync + os.replace)
      shard-00000.lmdb       one LMDB environment per shard (subdir=False)
      shard-00000.digests    its per-record digests (16 raw bytes each; fastload verify)
      shard-00001.lmdb
      pack_report.json       summary of the pack (counts, skipped with reasons, time)
      problems.txt           one line per problem found while packing

The global index ``i`` maps to ``(shard, local index)`` through the cumulative record
counts of the manifest's shard list; inside a shard the key of local index ``j`` is
``struct.pack(">Q", j)``. Values are :class:`fastload.record.Record` encodings (versioned
msgpack, no pickle).

Modules:

- :mod:`~fastload.store.manifest`: :class:`Manifest` owns ``manifest.json`` (fields,
  checks, atomic write) and its :class:`ShardEntry` list;
- :mod:`~fastload.store.shards`: keys, checksums (:func:`record_digest`,
  :class:`ShardHash`), the per-record digests files, :class:`ShardWriter`, and the
  process-wide cache of read-only environments (opened lazily, ``lock=False``,
  ``readahead=False``, once per process: a forked child drops the handles it inherited
  and opens its own; keyed by the shard file's identity, so a re-pack in the same process
  is never read under the old manifest);
- :mod:`~fastload.store.dataset`: :class:`Dataset`, records by global index;
- :mod:`~fastload.store.verify`: :func:`verify` (``fastload verify``: each shard walked in
  a child process, so damaged pages that crash LMDB are reported, not fatal) and
  :func:`format_info` (``fastload info``).
"""
from fastload.store.dataset import Dataset
from fastload.store.manifest import (FORMAT_VERSION, MANIFEST_NAME, Manifest, ShardEntry,
                                     ShardProblem, StoreError, write_json_atomic)
from fastload.store.shards import (SHARD_PATTERN, ShardHash, ShardWriter, decode_key, encode_key,
                                   record_digest)
from fastload.store.verify import format_info, verify

__all__ = ["Dataset", "Manifest", "ShardEntry", "ShardProblem", "StoreError", "verify",
           "format_info", "MANIFEST_NAME", "FORMAT_VERSION", "SHARD_PATTERN", "ShardWriter",
           "ShardHash", "record_digest", "encode_key", "decode_key", "write_json_atomic"]
