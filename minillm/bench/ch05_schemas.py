"""Chapter 5 benchmark workloads: the JSON Schemas (a character card and a mix of five) and the prompts.

Every string has a maxLength and every number is an integer range, so documents stay bounded even under
random dummy weights (an unbounded number is a digit run that only max_tokens ends).

Used by minillm/bench/ch05.py (minillm bench --chapter 5); checked by pytest tests/test_bench.py.
"""

from __future__ import annotations

import random


def _string(n: int) -> dict:
    return {"type": "string", "maxLength": n}


def _object(properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


CARD = _object(
    {
        "name": _string(24),
        "house": {"enum": ["Gryffindor", "Hufflepuff", "Ravenclaw", "Slytherin"]},
        "blood_status": {"enum": ["Pure-blood", "Half-blood", "Muggle-born"]},
        # length in inches, an integer range: a JSON number has no bounds in json_schema_to_regex, and
        # under dummy weights an unbounded digit run took every card to max_tokens
        "wand": _object(
            {
                "wood": _string(16),
                "core": _string(16),
                "length": {"type": "integer", "minimum": 7, "maximum": 16},
            }
        ),
        "alive": {"type": "boolean"},
        "patronus": _string(24),
    }
)
MIX = {
    "product": _object(
        {
            "name": _string(32),
            "category": {"enum": ["books", "electronics", "garden", "kitchen", "toys"]},
            "price_cents": {"type": "integer", "minimum": 0, "maximum": 100000},
            "tags": {"type": "array", "items": _string(12), "maxItems": 3},
            "in_stock": {"type": "boolean"},
        }
    ),
    "event": _object(
        {
            "title": _string(32),
            "date": {"type": "string", "format": "date"},
            "location": _object({"city": _string(20), "country": _string(20)}),
            "capacity": {"type": "integer", "minimum": 1, "maximum": 5000},
        }
    ),
    "user": _object(
        {
            "username": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,15}$"},
            "full_name": _string(32),
            "age": {"type": "integer", "minimum": 13, "maximum": 120},
            "is_admin": {"type": "boolean"},
        },
        required=["username", "is_admin"],
    ),
    "tool_call": _object(
        {
            "tool": {"enum": ["search", "get_weather", "send_email", "calculator"]},
            "arguments": _object(
                {
                    "query": _string(40),
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
                    "language": {"enum": ["en", "fr", "de", "ja"]},
                }
            ),
        }
    ),
    "review": _object(
        {
            "product_id": {"type": "integer", "minimum": 1, "maximum": 99999},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "sentiment": {"enum": ["positive", "neutral", "negative"]},
            "summary": _string(48),
            "verified": {"type": "boolean"},
        }
    ),
}
SCHEMAS = {"card": CARD, **MIX}
PROMPTS = {
    "card": [
        "Character card of a Hogwarts student, as JSON:\n",
        "Here is the character card of a Hogwarts student in JSON:\n",
        "A new student was sorted today. Their character card, as JSON:\n",
        "Character card of a Hogwarts student (JSON, one line):\n",
    ],
    "product": ["A product listing from an online shop, as JSON:\n", "Catalogue entry (JSON):\n"],
    "event": ["An upcoming event, as JSON:\n", "Conference announcement in JSON format:\n"],
    "user": ["A user account record, as JSON:\n", "User profile (JSON):\n"],
    "tool_call": ["A function call from the assistant, as JSON:\n", "Tool call (JSON):\n"],
    "review": ["A customer review, as JSON:\n", "Review summary in JSON:\n"],
}
WORKLOADS = ("character card", "json-schema mix")


def make_workloads(n: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """workload -> [(schema name, prompt)]: the card for every request, or the mix schemas in turn."""
    rng = random.Random(seed)
    card = [("card", rng.choice(PROMPTS["card"])) for _ in range(n)]
    names = list(MIX)
    mix = [(names[i % len(names)], rng.choice(PROMPTS[names[i % len(names)]])) for i in range(n)]
    return dict(zip(WORKLOADS, (card, mix)))
