"""FileStore: one file per key under ``base_path``, written atomically.

Key -> path. A key is split on ``/``; each part becomes one path segment:

- Letters, digits (any script) and ``-_.,:@+=~`` and space stay as they are; every other
  character (``%``, ``\\``, NUL, control characters, other punctuation) becomes ``%XX`` of its
  UTF-8 bytes. A leading ``.`` is written ``%2E``, so ``.`` and ``..`` can never step out of a
  folder and the store's own dot-files (temp files, the lock) never collide with a key.
- The last segment gets the format's extension: ``config/settings`` -> ``config/settings.json``.
  A folder segment that would end in that extension has its last dot encoded, so a folder can
  never collide with a key's file.
- Empty segments (a leading ``/``, ``a//b``, a trailing ``/``) and names too long for the file
  system (a segment over 200 bytes, a path over 3000) raise ``InvalidKeyError`` (a ValueError).

The mapping is exactly reversible (``keys()`` decodes paths back to keys; a hand-made file whose
name is not the canonical encoding of its decoded key, e.g. ``a%2Fb.json``, is not listed) and
every resolved path is checked to lie inside ``base_path``. Symbolic links inside the folder are
never followed, not even one swapped in mid-call: each folder below ``base_path`` is opened from
its parent's descriptor with ``O_DIRECTORY | O_NOFOLLOW``, and every open, rename, unlink, mkdir,
stat and listing runs relative to a folder's descriptor (see :mod:`.paths`). A key whose path
meets a link raises :class:`InvalidKeyError` naming the key and the link; ``keys()`` skips links.
``base_path`` itself is looked up on every call, so a folder replaced while the store is open (a
restore, a delete by hand) is the one used from the next call on. Case-insensitive file systems
(macOS, Windows defaults) would merge keys differing only in case: not supported.

File contents. ``format="json"``: plain JSON of the value, readable and editable by a person;
types JSON lacks are tagged objects (``{"__kv__": "datetime", "v": "..."}``). A key with a TTL
is wrapped: ``{"__kv__": "ttl", "expires_at": <unix time>, "value": ...}``. ``msgpack`` and
``pickle``: the serializer's self-describing blob, prefixed by ``b"\\xc1t"`` and the expiry as
a little-endian double when there is a TTL.

Writes go to a temp file in the same folder, are fsynced (``fsync=True``), then ``os.replace``d
over the key's file, and the folder is fsynced: a reader sees the old or the new file, never a
half-written one. Writers (threads and processes) take an exclusive ``flock`` on
``<base_path>/.kvstore.lock``, which makes ``incr``, set-if-absent, compare-and-swap (on the
file's exact bytes) and transactions atomic; readers take no lock. A write of several files
keeps a hard link to each file it replaces until every rename is done, so a failure partway
(a folder where a file must go, a full disk) puts the earlier files back.

Locks live in ``<base_path>/.kvstore-meta/`` (dot-folders are never keys), reached the same way.
Logs are JSON Lines files beside the keys' files (see :mod:`.logs`).

The package, one module per job: :mod:`.store` (:class:`FileStore`), :mod:`.keys` (keys as
file names), :mod:`.format` (what a file holds), :mod:`.paths` (folders opened without
following links), :mod:`.atomic` (temp files, renames, all or nothing), :mod:`.lock` (the
writer lock), :mod:`.logs` (JSON Lines logs) and :mod:`.replace` (restores).
"""

from .store import FileStore

__all__ = ["FileStore"]
