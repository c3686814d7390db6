"""The module tree a checkpoint's own dotted names imply, for when there is no model to match against.

``encoder.layer.0.attention.query.weight`` is the tensor ``weight`` of the module ``encoder.layer.0.attention.query``;
every module rolls up what lies below it: tensors, values (parameters), bytes and dtypes. Children keep the order
in which their first tensor appears in the checkpoint, numbered siblings in numeric order (0, 1, 2, ..., 10).
Nothing is read but the index.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from .checkpoint import CheckpointIndex

__all__ = ["DiskNode", "disk_tree"]


@dataclass(eq=False)
class DiskNode:
    """A module implied by the names (``path`` "" for the root), its own tensors (on-disk names) and children."""

    path: str
    tensors: list[str] = field(default_factory=list)  # on-disk names directly under this module
    children: list[DiskNode] = field(default_factory=list)
    n_tensors: int = 0  # in the whole subtree
    n_params: int = 0  # values in the whole subtree
    nbytes: int = 0
    dtypes: Counter = field(default_factory=Counter)  # dtype -> tensors of that dtype in the subtree

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1] if self.path else "(checkpoint)"

    def walk(self) -> Iterator[DiskNode]:
        """This node and everything below it, pre-order."""
        stack = [self]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def dtype_text(self) -> str:
        """``bfloat16`` or ``float32 ×12, int64 ×1`` (most tensors first, then by name)."""
        if len(self.dtypes) == 1:
            return next(iter(self.dtypes))
        return ", ".join(f"{d} ×{n}" for d, n in sorted(self.dtypes.items(), key=lambda x: (-x[1], x[0])))

    def to_json(self) -> dict:
        return {"path": self.path, "tensors": self.n_tensors, "params": self.n_params, "bytes": self.nbytes,
                "dtypes": dict(sorted(self.dtypes.items(), key=lambda x: (-x[1], x[0])))}


_INT = re.compile(r"\d+")


def _order(name: str) -> tuple:
    # numbers by value (no int(): a 5,000-digit name from a file must not raise), the rest after them in file order
    if _INT.fullmatch(name):
        digits = name.lstrip("0")
        return (0, len(digits), digits)
    return (1, 0, "")


def disk_tree(index: CheckpointIndex) -> DiskNode:
    """The tree of ``index``'s dotted names with per-module roll-ups (see the module docstring)."""
    root = DiskNode("")
    nodes: dict[str, DiskNode] = {"": root}
    for name in index.tensors:
        module = name.rpartition(".")[0]
        node = nodes.get(module)
        if node is None:
            # walk up to the nearest module that exists, then create the missing ones outermost first
            todo = [module]
            up = module.rpartition(".")[0]
            while up and up not in nodes:
                todo.append(up)
                up = up.rpartition(".")[0]
            parent = nodes[up] if up in nodes else root
            for p in reversed(todo):
                node = nodes[p] = DiskNode(p)
                parent.children.append(node)
                parent = node
        node.tensors.append(name)
    for node in nodes.values():
        if any(_INT.fullmatch(c.name) for c in node.children):
            node.children.sort(key=lambda c: _order(c.name))  # stable: the non-numbered keep their order

    # roll up children before parents: ancestors were created before their descendants (iterative: names from a
    # file may nest thousands of levels deep)
    for node in nodes.values():
        for n in node.tensors:
            t = index.tensors[n]
            node.n_tensors += 1
            node.n_params += t.numel
            node.nbytes += t.nbytes
            node.dtypes[t.dtype] += 1
    for path in reversed(list(nodes)):
        if not path:
            continue
        node, parent = nodes[path], nodes[path.rpartition(".")[0]]
        parent.n_tensors += node.n_tensors
        parent.n_params += node.n_params
        parent.nbytes += node.nbytes
        parent.dtypes.update(node.dtypes)
    return root
