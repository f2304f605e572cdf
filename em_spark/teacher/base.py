"""The one interface every teacher backend implements (pure Python, no pyspark).

A backend takes a batch of :class:`TeachRequest` and returns one :class:`Completion` per
request, in order. It never raises for one bad request: a request that could not be
answered comes back with ``error_kind`` / ``error`` set, and the job records it as a
``failed`` row that a later run retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


@dataclass(frozen=True)
class TeachRequest:
    pair_id: str
    left: Mapping[str, object]
    right: Mapping[str, object]
    # The gold label (rationalization), or None when the teacher must decide (--predict).
    label: int | None
    # The chat prompt (instruction, demonstrations, the pair); the rules backend ignores it.
    messages: Sequence[Message]


@dataclass(frozen=True)
class Completion:
    text: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # Wall time of the request; batched backends report the batch time / batch size.
    latency_ms: float | None = None
    # Why there is no text: timeout | connect | http_429 | http_5xx | http_4xx |
    # bad_response | empty_choice | backend.
    error_kind: str | None = None
    error: str | None = None


class Backend(Protocol):
    def complete(self, requests: Sequence[TeachRequest]) -> list[Completion]: ...

