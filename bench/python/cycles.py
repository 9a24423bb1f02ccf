"""cycles — cyclic garbage: objects in reference cycles that only the cycle collector frees.

Doubly linked lists, trees with parent pointers, graphs of nodes with random edges,
self-referencing containers and closures that capture themselves; every structure is
dropped while still cyclic, so CPython's generational gc (automatic thresholds, plus a few
explicit gc.collect() calls) finds and frees it.  Deterministic (gc runs are triggered by
allocation counts, not time); prints a checksum.
Usage: python3 cycles.py [SCALE]
"""
import gc
import random
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0


class Node:
    def __init__(self, value):
        self.value = value
        self.prev = None
        self.next = None


class TreeNode:
    __slots__ = ("value", "parent", "children")

    def __init__(self, value, parent):
        self.value = value
        self.parent = parent
        self.children = []
        if parent is not None:
            parent.children.append(self)


class Vertex:
    def __init__(self, ident):
        self.ident = ident
        self.edges = []
        self.attrs = {"self": self, "ident": ident}


def linked_list(n):
    head = Node(0)
    cur = head
    for i in range(1, n):
        node = Node(i)
        node.prev = cur
        cur.next = node
        cur = node
    cur.next = head  # close the ring
    head.prev = cur
    return head


def tree(depth, fanout, value=0, parent=None):
    node = TreeNode(value, parent)
    if depth > 0:
        for k in range(fanout):
            tree(depth - 1, fanout, value * fanout + k, node)
    return node


def graph(rng, n, degree):
    vs = [Vertex(i) for i in range(n)]
    for v in vs:
        for _ in range(degree):
            v.edges.append(vs[rng.randrange(n)])
    return vs[0]


def make_counter():
    state = {"n": 0}

    def bump():
        state["n"] += 1
        return bump  # the closure refers to itself through its cell
    state["fn"] = bump
    return bump


def main():
    rng = random.Random(7)
    rounds = max(1, round(15 * SCALE))
    acc = 0
    crc = 0
    collected = 0
    for r in range(rounds):
        for k in range(10):
            head = linked_list(2000)
            acc += head.prev.value + head.next.next.value
            root = tree(6, 4)  # 5461 nodes, each child points at its parent
            acc += len(root.children[-1].children[-1].children)
            v0 = graph(rng, 1000, 3)
            acc += sum(e.ident for e in v0.edges)
            counters = [make_counter() for _ in range(500)]
            for c in counters[::7]:
                c()()
            lst = []
            lst.append(lst)
            d = {"d": None}
            d["d"] = d
            acc += len(counters)
            del head, root, v0, counters, lst, d, c
        if r % 5 == 4:
            collected += gc.collect()
        crc = zlib.crc32(f"{r}:{acc}".encode(), crc)
    gc.collect()
    print(f"checksum {acc:x}-{crc:08x}-{collected > 0}")


main()
