"""Fact and entity extraction from users' chat turns (never from the bot's own replies).

- `ner`: offline entity mentions (spaCy en_core_web_sm NER + chat rules; rules alone if the
  model is missing) and "my sister Anna" relationship phrases;
- `heuristics`: offline typed candidate facts with an explicit subject, relations, slugs,
  dates and an importance score;
- `llm_schema`: the LLM extraction/summary prompts, the strict JSON parser, and an offline
  extractive session summary.

Everything here is synchronous and CPU-bound: from async code call it via `asyncio.to_thread`.
"""

from .heuristics import FACT_KINDS, Candidate, candidate_facts, classify_kind, importance, resolve_date, split_sentences
from .llm_schema import (
    EXTRACTION_SYSTEM_PROMPT,
    SUMMARY_SYSTEM_PROMPT,
    ExtractedEntity,
    ExtractedFact,
    ExtractionParseError,
    extraction_messages,
    extractive_summary,
    parse_extraction,
    summary_messages,
)
from .ner import ENTITY_TYPES, EntityMention, extract_entities, model_available, relationship_mentions

__all__ = [
    "ENTITY_TYPES",
    "EXTRACTION_SYSTEM_PROMPT",
    "FACT_KINDS",
    "SUMMARY_SYSTEM_PROMPT",
    "Candidate",
    "EntityMention",
    "ExtractedEntity",
    "ExtractedFact",
    "ExtractionParseError",
    "candidate_facts",
    "classify_kind",
    "extract_entities",
    "extraction_messages",
    "extractive_summary",
    "importance",
    "model_available",
    "parse_extraction",
    "relationship_mentions",
    "resolve_date",
    "split_sentences",
    "summary_messages",
]
