"""Make the next training batch while the current step runs: a one-thread pipeline.

Batch preparation (indexing, normalising, augmenting, masking) runs in a background
thread, strictly in order, so every random draw happens in the same sequence as without
the thread: the same seed gives bit-identical batches and masks either way. The training
loop uses it on CUDA, where the masks of batch i + 1 (the `region` masker's ~25 dependent
rounds of small kernels and their host syncs, say) are made while step i runs on the GPU.
On a CPU the step already keeps every core busy: there a second thread only competes with
it (measured in benchmarks/README.md), so the loop makes each batch in line.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()


def prefetched(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order, produced by a background thread up to ``depth`` items ahead.

    An exception raised while producing is raised here, at the item where it happened. Closing
    the iterator early (``break`` out of a loop over it, or ``close()``) stops the thread after
    the item it is making. Use it with ``contextlib.closing`` to close it at a known point.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            offer((_END, exc))
            return
        offer((_END, None))

    thread = threading.Thread(target=produce, name="mimbench-next-batch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
