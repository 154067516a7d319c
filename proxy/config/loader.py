"""Reads a policy file: YAML with line numbers, `${VAR}` substitution, no duplicate keys.

PyYAML's `safe_load` keeps the last of two duplicate keys without a word, and loses the
line of every value. We compose the node tree ourselves instead, so every error can name
the file, the line and the key path, and so the values that came from the environment or
from a secret file are known (they must never be echoed in an error or a log line).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

# ${VAR}, ${VAR:-default}, ${file:/path/to/secret}; `$$` is a literal `$`.
_SUBST_RE = re.compile(r"\$\$|\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?)\}")


def format_path(path: KeyPath) -> str:
    """('upstreams', 'a', 'endpoints', 0) -> 'upstreams.a.endpoints[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file, located as precisely as we can."""

    path: KeyPath
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {format_path(self.path)}: {self.message}"


class ConfigError(Exception):
    """A policy file that cannot be used; carries every problem found, not only the first."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [p.render(source) for p in problems]
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{source}: {count}\n  " + "\n  ".join(lines))


@dataclass
class Document:
    """A parsed file: plain data, the line of every key path, and what was substituted."""

    source: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    # key path -> the text as written (`Bearer ${API_KEY}`): shown instead of the value
    templates: dict[KeyPath, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that is in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class _Loader(yaml.SafeLoader):
    """SafeLoader; composing only, we construct the values ourselves."""


def parse_document(text: str, source: str, env: Mapping[str, str] | None = None) -> Document:
    """Parse YAML text into a Document; raises ConfigError on syntax errors.

    Other problems (duplicate keys, unset variables) are kept in `doc.problems`, so that
    validation can report them together with its own.
    """
    env = os.environ if env is None else env
    doc = Document(source=source, data=None)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem((), f"not valid YAML: {problem}", line)]) from None
    if node is None:
        raise ConfigError(source, [Problem((), "the file is empty")])
    doc.data = _Walker(doc, env).value(node, ())
    return doc


def read_document(path: str | Path, env: Mapping[str, str] | None = None) -> Document:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(source, [Problem((), f"cannot read the file: {reason}")]) from None
    return parse_document(text, source, env)


class _Walker:
    """Turns composed nodes into plain data, recording lines and substitutions."""

    def __init__(self, doc: Document, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.env = env
        self.constructor = _Loader("")

    def value(self, node: yaml.Node, path: KeyPath) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            return self.substitute(value, path)
        return value

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            # A key is the text as written: YAML 1.1 would read `on:` (retry.on) as True.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:null":
                key = key_node.value
            else:
                key = self.constructor.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                self.problem(path, f"keys must be strings, got {key!r}", line)
                continue
            if key == "<<":
                self.problem(path, "YAML merge keys (<<) are not supported", line)
                continue
            if key in out:
                first = self.doc.lines.get((*path, key))
                self.problem((*path, key), f"duplicate key (first defined on line {first})", line)
                continue
            self.doc.lines[(*path, key)] = line
            out[key] = self.value(value_node, (*path, key))
        return out

    def substitute(self, text: str, path: KeyPath) -> str:
        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            file_name, var, default = m.groups()
            self.doc.templates[path] = text
            if file_name is not None:
                value = self.read_secret(file_name.strip(), path)
            elif var in self.env:
                value = self.env[var]
            elif default is not None:
                value = default
            else:
                self.problem(path, f"environment variable {var} is not set (and has no default)")
                value = ""
            return value

        return _SUBST_RE.sub(replace, text)

    def read_secret(self, file_name: str, path: KeyPath) -> str:
        try:
            return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            self.problem(path, f"cannot read secret file {file_name}: {reason}")
            return ""

    def problem(self, path: KeyPath, message: str, line: int | None = None) -> None:
        self.doc.problems.append(Problem(path, message, line or self.doc.line_of(path)))
