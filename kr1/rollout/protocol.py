"""The search protocol: prompt, parsing of the model's actions, and retrieved-text formatting.

The model thinks, then either searches or answers:

    <think>I need the director first.</think><search>The Letter of Calugrim</search>
    <information>Doc 1 (Title: The Letter of Calugrim) ...</information>      <- appended by kr1
    <answer>Tavrin</answer>

Each generated segment stops at `</search>` or `</answer>`. Only text the model generated
in that segment is parsed (never the prompt or retrieved passages), and retrieved
passages have protocol tags removed, so a passage cannot supply the episode's answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
STOP_STRINGS = (SEARCH_CLOSE, ANSWER_CLOSE)
PROTOCOL_TAGS = (SEARCH_OPEN, SEARCH_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, INFO_OPEN, INFO_CLOSE)
_PROTOCOL_TAG_RE = re.compile(r"</?\s*(search|answer|information)\s*>", re.IGNORECASE)

SEARCH_R1_INSTRUCTION = (
    "Answer the given question. Reason inside <think> and </think> every time you get new information. "
    "If you lack some knowledge, call the search engine with <search> query </search>; it returns the top "
    "passages between <information> and </information>. Search as many times as you need. When no further "
    "knowledge is needed, give the answer inside <answer> and </answer>, without explanation, for example "
    "<answer> Tavrin </answer>.\nQuestion: "
)
# the tiny embedded model cannot read prose; a short prompt halves its sequence length
COMPACT_INSTRUCTION = "Search with <search> query </search>, answer with <answer> answer </answer>.\nQuestion: "
PROMPT_TEMPLATES = {"search_r1": SEARCH_R1_INSTRUCTION, "compact": COMPACT_INSTRUCTION}
INVALID_FEEDBACK = (
    "\nMy previous action is invalid. To search, I put the query between <search> and </search>. "
    "To answer, I put the answer between <answer> and </answer>. Let me try again.\n"
)


@dataclass(frozen=True)
class Action:
    """What one generated segment asks for."""

    kind: str  # "search" | "answer" | "invalid"
    content: str = ""  # the query or the answer
    reason: str = ""  # why an invalid segment is invalid


def prompt_messages(question: str, template: str = "search_r1") -> list[dict[str, str]]:
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r} (choose from {', '.join(PROMPT_TEMPLATES)})")
    return [{"role": "user", "content": PROMPT_TEMPLATES[template] + question.strip()}]


def prompt_token_ids(tokenizer: Any, question: str, template: str = "search_r1") -> list[int]:
    """The question as chat-template token ids, ending where the assistant starts."""
    messages = prompt_messages(question, template)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def parse_action(segment: str) -> Action:
    """Parse one generated segment into a search, an answer, or an invalid action.

    A valid segment is `prefix <tag>content</tag> suffix`, where the closing tag is the first
    protocol closing tag in the segment, and neither prefix nor content holds any protocol tag
    (no nesting, no unbalanced tags, no self-written <information>). The suffix is whatever the
    stopping token carried past the closing tag and is ignored.
    """
    positions = [(segment.find(tag), tag) for tag in STOP_STRINGS if tag in segment]
    if not positions:
        return Action("invalid", reason="no </search> or </answer>")
    close_at, close_tag = min(positions)
    open_tag = SEARCH_OPEN if close_tag == SEARCH_CLOSE else ANSWER_OPEN
    open_at = segment.rfind(open_tag, 0, close_at)
    if open_at < 0:
        return Action("invalid", reason=f"{close_tag} without {open_tag}")
    prefix, content = segment[:open_at], segment[open_at + len(open_tag):close_at]
    if _PROTOCOL_TAG_RE.search(prefix) or _PROTOCOL_TAG_RE.search(content):
        return Action("invalid", reason="nested or unbalanced tags")
    content = content.strip()
    kind = "search" if close_tag == SEARCH_CLOSE else "answer"
    if not content:
        return Action("invalid", reason=f"empty {'query' if kind == 'search' else 'answer'}")
    return Action(kind, content)


def strip_protocol_tags(text: str) -> str:
    """Remove protocol tags from retrieved text so it can never read as a model action."""
    return _PROTOCOL_TAG_RE.sub(" ", text)


def format_information(passages: Sequence[tuple[str, str]], max_passage_chars: int) -> str:
    """Retrieved (title, text) pairs as the <information> block appended after a search."""
    lines = []
    for rank, (title, text) in enumerate(passages, start=1):
        body = strip_protocol_tags(f"(Title: {title}) {text}")[:max_passage_chars]
        lines.append(f"Doc {rank} {body}")
    if not lines:
        lines.append("No passage matched the query.")
    return f"\n\n{INFO_OPEN}" + "\n".join(lines) + f"{INFO_CLOSE}\n\n"
