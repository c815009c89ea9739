"""Human hand-off: the queue, its triggers, the webhook, the client's answer, the review UI.

A request is handed to a person when the policy says ``handoff``, the client asks,
a conversation runs too long or keeps failing guardrails (:mod:`.tracker`). The
:class:`HandoffService` stores it (``handoffs`` table, text as the privacy setting
allows), posts a webhook (:mod:`.webhook`), and the client receives an answer
saying a person will follow up (:mod:`.response`) with an id it can poll at
``GET /v1/handoffs/{id}``. Reviewers work in the ``/review`` web UI
(:mod:`.routes`, :mod:`.auth`); an edited answer also becomes a preference pair in
``feedback``.

Modules: :mod:`.config` (settings), :mod:`.model` (values), :mod:`.content`
(privacy), :mod:`.conversation` (request body to parts), :mod:`.store`
(storage protocols, memory store), :mod:`.clickhouse` (ClickHouse store), :mod:`.hook`
(the pipeline's hook), :mod:`.tracker`, :mod:`.webhook`,
:mod:`.response`, :mod:`.service`, :mod:`.auth`, :mod:`.highlight`, :mod:`.routes`.

Import from the submodules; this package's ``__init__`` only re-exports the
settings, so ``sidecar.settings`` can import them without pulling in the rest.
"""

from __future__ import annotations

from sidecar.handoff.config import HandoffSettings, ReviewSettings

__all__ = ["HandoffSettings", "ReviewSettings"]
