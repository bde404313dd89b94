"""A vectorised sum tree in numpy: O(log n) batch sampling and batch updates for prioritized selection.

Leaves hold non-negative weights; every inner node holds the exact sum of its two children (recomputed from the
children on each update, never adjusted by deltas, so no rounding drift accumulates). Node 1 is the root; the
children of node i are 2i and 2i + 1; leaf j lives at node ``offset + j``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SumTree"]

_TOP_LEVEL = 11  # find() picks a subtree at this level (2,048 nodes) in one searchsorted


class SumTree:
    """Sum tree over ``capacity`` leaves with whole-batch descent (one numpy op per level for all draws)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"SumTree capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.depth = max(1, int(np.ceil(np.log2(capacity))))
        self.offset = 1 << self.depth
        self.nodes = np.zeros(2 * self.offset, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def get(self, leaves: np.ndarray) -> np.ndarray:
        return self.nodes[self.offset + leaves]

    def set(self, leaves: np.ndarray, weights: np.ndarray) -> None:
        """Set leaf weights (``leaves`` unique) and recompute their ancestors level by level."""
        nodes = self.nodes
        if len(leaves) <= 2:  # scalar path: a few Python ops per level beat numpy's per-call overhead
            for leaf, weight in zip(leaves.tolist(), np.asarray(weights, dtype=np.float64).tolist()):
                self.set_one(leaf, weight)
            return
        idx = self.offset + np.asarray(leaves, dtype=np.int64)
        nodes[idx] = weights
        top = min(self.depth, _TOP_LEVEL)
        for _ in range(self.depth - top):
            idx >>= 1
            left = idx << 1
            nodes[idx] = nodes[left] + nodes[left + 1]
        # The top levels (at most 2,047 nodes) are recomputed whole: one slice sum per level beats gathers.
        for level in range(top - 1, -1, -1):
            lo = 1 << level
            np.add(nodes[2 * lo : 4 * lo : 2], nodes[2 * lo + 1 : 4 * lo : 2], out=nodes[lo : 2 * lo])

    def set_one(self, leaf: int, weight: float) -> None:
        """Set one leaf in plain Python (cheaper than numpy calls for a single path of ``depth`` nodes)."""
        nodes = self.nodes
        i = self.offset + leaf
        nodes[i] = weight
        i >>= 1
        while i:
            nodes[i] = nodes[2 * i] + nodes[2 * i + 1]
            i >>= 1

    def find(self, targets: np.ndarray) -> np.ndarray:
        """Leaves whose cumulative-weight interval holds each target in [0, total): a batch descent.

        The top levels are skipped: one ``searchsorted`` over the running sums of the nodes at level
        ``min(depth, 11)`` (at most 2,048 of them, summed afresh on each call) picks each draw's subtree there,
        then the descent goes on level by level."""
        nodes = self.nodes
        u = np.array(targets, dtype=np.float64)
        top = min(self.depth, _TOP_LEVEL)
        first = 1 << top
        level = nodes[first : 2 * first]
        ends = np.cumsum(level)
        # the first node whose interval end exceeds the target (the last one if rounding put it past all)
        pos = np.minimum(np.searchsorted(ends, u, side="right"), first - 1)
        u -= ends[pos] - level[pos]
        idx = pos + first
        for _ in range(self.depth - top):
            idx <<= 1
            left = nodes[idx]
            right = u >= left
            u -= left * right
            idx += right
        leaves = idx - self.offset
        # Rounding can push a draw onto a zero-weight leaf at an interval boundary: move it to a positive one.
        bad = nodes[idx] <= 0.0
        if bad.any():
            leaves[bad] = self._nearest_positive(leaves[bad])
        return leaves

    def find_one(self, target: float) -> int:
        """Single-draw descent in plain Python (cheaper than numpy for one element)."""
        nodes = self.nodes
        i = 1
        for _ in range(self.depth):
            i <<= 1
            left = nodes[i]
            if target >= left:
                target -= left
                i += 1
        if nodes[i] <= 0.0:
            return int(self._nearest_positive(np.array([i - self.offset]))[0])
        return i - self.offset

    def _nearest_positive(self, leaves: np.ndarray) -> np.ndarray:
        weights = self.nodes[self.offset : self.offset + self.capacity]
        positive = np.flatnonzero(weights > 0.0)
        if len(positive) == 0:
            raise RuntimeError("SumTree.find on a tree whose weights are all zero")
        pos = np.clip(np.searchsorted(positive, leaves), 0, len(positive) - 1)
        return positive[pos]

    def clear(self) -> None:
        self.nodes.fill(0.0)
