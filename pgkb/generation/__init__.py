"""Answer generation for RetrieveAndGenerate: generators, prompt templates, citations, sessions."""

from pgkb.generation.base import Answer, GenerationRequest, RewriteRequest, Segment, Turn
from pgkb.generation.registry import generator_for

__all__ = ["Answer", "GenerationRequest", "RewriteRequest", "Segment", "Turn", "generator_for"]
