"""Batching: the data path from a source to the batches a step trains on.

    source ──> order ──> sizes (cut) ──> plan ──> row store ──> (X batch, y batch)
               order.py  sizes.py        plan.py  memory.py (arrays) / disk.py (a file,
                                                  through reader.py's prefetching reader)

``MiniBatches`` (minibatches.py) puts them together: it owns the order and the cut, and *holds*
a row store that reads what each epoch's plan names. ``shard.py`` gives a rank its share of each
global batch in data-parallel training.
"""

from minigd.batching.disk import streaming_pipeline
from minigd.batching.minibatches import MiniBatches
from minigd.batching.order import SHUFFLES, BlockLayout, BlockShuffle, distinct_blocks
from minigd.batching.reader import BatchReader, label_encoder, pipeline_bytes
from minigd.batching.shard import rank_share
from minigd.batching.sizes import (
    LAST_BATCH_POLICIES,
    batch_bounds,
    parse_batch_size,
    resolve_batch_size,
)

__all__ = [
    "LAST_BATCH_POLICIES",
    "SHUFFLES",
    "BatchReader",
    "BlockLayout",
    "BlockShuffle",
    "MiniBatches",
    "batch_bounds",
    "distinct_blocks",
    "label_encoder",
    "parse_batch_size",
    "pipeline_bytes",
    "rank_share",
    "resolve_batch_size",
    "streaming_pipeline",
]
