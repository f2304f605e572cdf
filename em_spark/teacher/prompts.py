"""Versioned prompt templates (YAML under em_spark/teacher/prompts, linked from conf/prompts).

A template has ``version``, ``task`` (``rationalize``: the gold label is given;
``predict``: the teacher decides), ``system`` and ``user`` (with ``{pair}`` and, for
rationalization, ``{label}``). Demonstrations become earlier user / assistant turns in
the same format as the answer the model must give.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from em_spark.errors import ConfigError
from em_spark.serialize import SerializerSettings, serialize_pair
from em_spark.teacher.base import Message

LABEL_WORDS = {1: "match", 0: "no match"}
_PLACEHOLDER = re.compile(r"\{(pair|label)\}")
# The label as the prompt shows it (the paper's wording).
PROMPT_LABELS = {1: "MATCH", 0: "NOT A MATCH"}

# JSON schema of an answer; vLLM / OpenAI-compatible servers can enforce it.
ANSWER_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["match", "no match"]},
        "explanation": {"type": "string"},
    },
    "required": ["label", "explanation"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Demonstration:
    left: Mapping[str, object]
    right: Mapping[str, object]
    label: int
    explanation: str


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    task: str  # rationalize | predict
    system: str
    user: str

    def messages(
        self,
        left: Mapping[str, object],
        right: Mapping[str, object],
        label: int | None,
        demonstrations: Sequence[Demonstration] = (),
        order: Sequence[str] | None = None,
        settings: SerializerSettings = SerializerSettings(),
    ) -> list[Message]:
        out: list[Message] = [{"role": "system", "content": self.system}]
        for demo in demonstrations:
            out.append({"role": "user", "content": self._user(demo.left, demo.right, demo.label, order, settings)})
            out.append({"role": "assistant", "content": format_answer(demo.label, demo.explanation)})
        out.append({"role": "user", "content": self._user(left, right, label, order, settings)})
        return out

    def _user(
        self,
        left: Mapping[str, object],
        right: Mapping[str, object],
        label: int | None,
        order: Sequence[str] | None,
        settings: SerializerSettings,
    ) -> str:
        if self.task == "rationalize" and label is None:
            raise ValueError(f"prompt {self.version}: rationalization needs the gold label")
        values = {
            "pair": serialize_pair(left, right, order, settings),
            "label": PROMPT_LABELS[label] if label is not None else "",
        }
        # One pass over the template only: record text may hold "{label}" or braces.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.user)


def format_answer(label: int, explanation: str) -> str:
    """An answer in the format every template asks for (also the rules backend's output)."""
    return json.dumps({"label": LABEL_WORDS[label], "explanation": explanation}, ensure_ascii=False)


def builtin_prompts_dir() -> Path:
    return Path(str(files("em_spark.teacher") / "prompts"))


def load_prompt(name_or_path: str) -> PromptTemplate:
    """A built-in template by name (``rationalize-v1``) or a template YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = builtin_prompts_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in builtin_prompts_dir().glob("*.yaml"))
        raise ConfigError(f"teach prompt {name_or_path!r} not found (built-in: {', '.join(known)})")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    missing = [k for k in ("version", "task", "system", "user") if not data.get(k)]
    if missing:
        raise ConfigError(f"{path}: prompt template lacks {', '.join(missing)}")
    if data["task"] not in ("rationalize", "predict"):
        raise ConfigError(f"{path}: task must be rationalize or predict, got {data['task']!r}")
    if "{pair}" not in data["user"]:
        raise ConfigError(f"{path}: user template must contain {{pair}}")
    return PromptTemplate(str(data["version"]), data["task"], data["system"], data["user"])
