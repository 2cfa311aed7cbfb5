"""The one embedding pipeline: read, decode, encode in batches, write.

Signals, Celery tasks, management commands and the example site all call
``embed_instances``. A row whose content hash and encoder identity are
unchanged is skipped; a row whose file cannot be read or decoded is marked
``failed`` with the reason, and the rest of its batch goes on. A row whose own
file fails with another error (a storage fault) is marked ``failed`` with
``TRANSIENT_PREFIX`` and a try count: the sweep tries it again, ``TRANSIENT_ATTEMPTS``
times in all. So is a row that fails alone with an unexpected error (a database error on its
write, the encoder's own error), once its batch, rolled back, is done again row by row.
A row from an encoder that differs only on the text side (same image part of
the identity, a stored norm) gets its semantic vector rebuilt from its stored
visual vector and norm, without its image being read (``text_only_candidates``).

Workers first *claim* their rows (``claim_rows``): a claim names the task and
holds for ``LEASE`` seconds, renewed after every batch, and a claimed row is
written only by its holder. The sweep takes back rows whose lease ran out, counting a
try on each. A run without a claim (in-process, the commands) counts its tries itself,
before the work (``count_tries``), so a row that kills the process is given up too.
"""

from __future__ import annotations

from .embedding import EmbedReport, embed_instances, embed_pks

__all__ = ["EmbedReport", "embed_instances", "embed_pks"]
