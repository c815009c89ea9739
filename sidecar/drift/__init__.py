"""Prompt and model drift: features per request, window statistics, events, canaries.

Three layers, as everywhere in railwatch:

- *produce*: :mod:`.facts` (at ingress, a few µs: turns, tools, system prompt hash),
  :mod:`.features` (scalar features of a finished record), :mod:`.embedder`;
- *process*: :class:`.worker.DriftExporter` receives finished records in batches from
  the export pipeline (off the request path), samples, computes features and
  embeddings, raises change events (:mod:`.changes`), stores rows;
- *analyse*: :mod:`.analysis` compares windows from ClickHouse over every pod's rows
  (:mod:`.stats`, :mod:`.mmd`), run by :class:`.service.DriftService` under a lease, or
  by ``railwatch drift run``; :mod:`.canary` probes each upstream.

Storage is :class:`exporters.clickhouse.drift_store.DriftStore`. Importing this
package is cheap (settings import :mod:`.config`).
"""
