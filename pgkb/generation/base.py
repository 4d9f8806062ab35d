"""What every generator takes and returns.

An answer is a list of segments whose texts, concatenated, are exactly `output.text`; a segment with
sources becomes one citation whose span is the segment's characters (start inclusive, end exclusive).
Keeping the answer in this form means spans never have to be searched for after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of a session."""

    question: str
    answer: str
    rewritten: str | None = None  # the question as it was used for retrieval


@dataclass(frozen=True)
class Segment:
    text: str
    sources: tuple[int, ...] = ()  # 0-based indexes into the retrieved results; () = uncited


@dataclass
class Answer:
    segments: list[Segment]
    generator: str  # "extractive", "openai-compatible", "bedrock-converse"

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


@dataclass
class GenerationRequest:
    question: str
    results: list[dict[str, Any]]  # Retrieve's retrievalResults, best first
    history: list[Turn] = field(default_factory=list)
    prompt_template: str | None = None  # generationConfiguration.promptTemplate.textPromptTemplate
    inference: dict[str, Any] = field(default_factory=dict)  # textInferenceConfig
    additional_fields: dict[str, Any] = field(default_factory=dict)  # additionalModelRequestFields


@dataclass
class RewriteRequest:
    question: str
    history: list[Turn]
    prompt_template: str | None = None  # orchestrationConfiguration.promptTemplate.textPromptTemplate
    inference: dict[str, Any] = field(default_factory=dict)
    additional_fields: dict[str, Any] = field(default_factory=dict)


class Generator(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> Answer: ...

    def rewrite(self, request: RewriteRequest) -> str:
        """The follow-up question made self-contained with the session's history."""
        ...
