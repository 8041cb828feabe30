"""YAML loading for configuration files: ``yaml.safe_load`` that refuses duplicate keys.

PyYAML keeps the last of two equal keys in a mapping without a word, so a second
``session:`` under ``categories:`` silently replaces the first. Here the composed document is
checked before anything is built: a duplicate is a :class:`ConfigError` naming the key's path
and both lines. Imported only when a file is read (PyYAML loads lazily).
"""

from __future__ import annotations

from typing import IO, Any

import yaml

from .errors import ConfigError

__all__ = ["load_yaml"]

_MERGE = "tag:yaml.org,2002:merge"


def load_yaml(stream: IO[str], source: str) -> Any:
    """The document in ``stream``, as ``yaml.safe_load`` builds it.

    Raises:
        ConfigError: a mapping holds the same key twice, e.g.
            ``app.yaml: persistence.categories.session: duplicate key at line 9 (first at line 7)``.
        yaml.YAMLError: malformed YAML (the caller words it).
    """
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_unique_keys(root: yaml.Node, source: str) -> None:
    """Walk every mapping of the composed document (aliases once) and refuse a repeated key."""
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, path = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, Any], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:  # `<<: *base`: explicit keys may override merged ones
                    todo.append((value_node, path))
                    continue
                name = _key_text(key_node)
                where = f"{path}.{name}" if path else name
                ident = (key_node.tag, name)
                line = key_node.start_mark.line + 1
                if ident in first:
                    raise ConfigError(f"{source}: {where}: duplicate key at line {line} "
                                      f"(first at line {first[ident]})")
                first[ident] = line
                todo.append((value_node, where))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))


def _key_text(node: yaml.Node) -> str:
    """A key as written (a scalar), or a short form of a complex key."""
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    kind = "mapping" if isinstance(node, yaml.MappingNode) else "sequence"
    return f"<{kind} at line {node.start_mark.line + 1}>"
