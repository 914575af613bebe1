"""Continuous batching: several items in flight, every denoiser call filled with their rows.

An item's estimate calls the denoiser in small pieces (a stage of an adaptive estimate, a block of
16 draws of a sequential ranking): one item alone sends a GPU a fraction of its batch. The runner
therefore measures up to ``in_flight`` items at once, each in its own thread, and merges their
denoiser calls, as LLM servers do:

* the denoisers a task uses are wrapped (:func:`batched`): a call from an item's thread enqueues
  the request and blocks until its rows come back; every other attribute is the wrapped model's,
  its methods serialized by one lock per model (adapters keep caches), and calls from any other
  thread go straight to the model;
* the coordinating thread (the runner's) sends the queued rows of each model, in item order, in
  calls of ``batch_size`` rows. Calls are merged only for the same wrapped model object (and
  inputs of one dtype, device and shape).

Determinism. The scheduler acts only when *every* item in flight is waiting on a request (or
done), never on a timer, and the set in flight changes only then: finished items leave in item
order and the next items of the todo list take their places before the next decision. What each
call holds is therefore a function of the todo list, the batch size and ``in_flight`` alone: a
run repeated with them is bit for bit the same. Another packing (another batch size or
``in_flight``, a resumed run whose todo list is shorter, a shard of several processes) gives
each row other partners in its calls, and numerics that agree to float rounding (a network's
output for one row may depend on the rest of its batch). ``in_flight=1`` measures the items one
after another in the runner's thread, as before this module.

Fill. Rows wait in their queue until a full call of ``batch_size`` can be made; a partial call
is sent only when nothing else would let any item go on, and then of one model only (the one
with most rows waiting): the others may gain rows from the items it wakes. Denoiser calls made
inside an attention block (``collect_attention``: the model records the attention of its rows)
are sent alone, under the model's lock, since the recorder would also see other items' rows; the
other items wait meanwhile.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .estimators import DenoiserOutputError

# Items in flight unless told: enough that their waiting rows fill a GPU's call of 256 rows at
# every stage (a sequential ranking asks for 16 draws x 2-5 captions at a time), few enough that
# their buffers stay small beside the network's. Measured by benchmarks/batch_fill.py (64 world
# items, sequential, bundled model with the exact one beside it, batch size 256): mean fill 0.92
# with 16 in flight, 0.97 with 32 and with 64 (16 and 64 measured apart; results/batch_fill.txt
# holds 1 and 32).
DEFAULT_IN_FLIGHT = 32

RUNNING, WAITING, DONE = "running", "waiting", "done"
# Seconds close() waits in all for the items' threads to end (a stopped item ends at its next call).
CLOSE_WAIT_S = 10.0


class Cancelled(BaseException):
    """Raised in an item's thread when the run stops (Ctrl-C, a failed item): a BaseException,
    so that an item's own ``except Exception`` does not take it for its error."""


class BatchedDenoiser:
    """A denoiser whose calls from an item's thread join the other items' calls (see the
    module's docstring); everything else is the wrapped model's. Counts the calls it makes and
    the rows they carry (:attr:`calls`, :attr:`rows`)."""

    def __init__(self, model: Any) -> None:
        self.wrapped = model
        self.lock = threading.RLock()  # one model call or method at a time
        self.calls = 0
        self.rows = 0

    @property
    def measured_model(self) -> Any:
        """The model whose calls this routes (what estimates name as their model)."""
        return self.wrapped

    def __call__(self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]) -> Any:
        slot = getattr(_local, "slot", None)
        if slot is None:  # not an item's thread: straight to the model
            return self.call(x_noisy, logsnr, conds)
        if slot.cancelled or slot.scheduler.closed:
            raise Cancelled
        if getattr(_local, "alone", 0):  # in an attention block
            return self.call(x_noisy, logsnr, conds)
        return slot.scheduler.submit(self, x_noisy, logsnr, conds)

    def call(self, x_noisy: torch.Tensor, logsnr: torch.Tensor, conds: Sequence[Any]) -> Any:
        """One call of the wrapped model, counted (no gradients: the scheduler's thread is not
        the item's, whose ``torch.no_grad`` it does not share)."""
        with self.lock, torch.no_grad():
            out = self.wrapped(x_noisy, logsnr, list(conds))
            self.calls += 1
            self.rows += len(x_noisy)
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "wrapped":  # copy and pickle probe these
            raise AttributeError(name)
        value = getattr(self.wrapped, name)
        if name == "collect_attention":
            return self._collect_attention
        if inspect.ismethod(value):  # encoders and caches: one thread at a time

            def locked(*args: Any, **kwargs: Any) -> Any:
                with self.lock:
                    return value(*args, **kwargs)

            return locked
        return value

    @contextlib.contextmanager
    def _collect_attention(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """The model's attention block, holding its lock throughout: the recorder sees every row
        of the calls made meanwhile, so those calls carry this item's rows alone (as do the
        thread's calls of any other model meanwhile, so that no lock waits on the scheduler)."""
        with self.lock, self.wrapped.collect_attention(*args, **kwargs) as collector:
            _local.alone = getattr(_local, "alone", 0) + 1
            try:
                yield collector
            finally:
                _local.alone -= 1


def batched(model: Any) -> BatchedDenoiser:
    """``model`` wrapped for batching across items (itself if it is already)."""
    return model if isinstance(model, BatchedDenoiser) else BatchedDenoiser(model)


def unwrap(model: Any) -> Any:
    """The model a :class:`BatchedDenoiser` wraps (anything else as it is)."""
    return model.wrapped if isinstance(model, BatchedDenoiser) else model


_local = threading.local()  # .slot: the item this thread measures; .alone: in attention blocks


@dataclass(eq=False)
class _Slot:
    """An item in flight."""

    scheduler: Scheduler
    index: int
    item: Any
    state: str = RUNNING
    request: _Request | None = None
    outcome: Any = None  # its row, or the exception it raised
    cancelled: bool = False
    thread: threading.Thread | None = None


@dataclass(eq=False)
class _Request:
    """One denoiser call an item waits on; its rows may travel in several calls."""

    denoiser: BatchedDenoiser
    x: torch.Tensor
    logsnr: torch.Tensor
    conds: list[Any]
    slot: _Slot
    queued: bool = False
    sent: int = 0  # rows put into calls so far
    pieces: list[torch.Tensor] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None
    done: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        """Requests that may share a call: one model, inputs alike."""
        x, a = self.x, self.logsnr
        return (id(self.denoiser), x.dtype, x.device, tuple(x.shape[1:]), a.dtype, a.device)


class Scheduler:
    """Measures items with up to ``in_flight`` in flight, merging the denoiser calls of the
    ``denoisers`` (:func:`batched` ones) into calls of ``batch_size`` rows. Use it as a context
    manager (leaving it stops every item still in flight) around :meth:`run`."""

    def __init__(
        self, denoisers: Mapping[str, BatchedDenoiser], batch_size: int | None, in_flight: int
    ) -> None:
        if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
            raise ValueError(f"`in_flight` must be a positive integer, got {in_flight!r}")
        self.denoisers = dict(denoisers)
        self.batch_size = batch_size
        # One item at a time when there is nothing to merge: in the caller's thread, as before.
        self.in_flight = in_flight if denoisers and batch_size else 1
        self._cond = threading.Condition()
        self._live: list[_Slot] = []
        self._queues: dict[tuple[Any, ...], list[_Request]] = {}
        self._stop_at: int | None = None  # no item after this index is measured
        self.closed = False  # stopped: every item raises Cancelled at its next call
        self._counts = {name: (d.calls, d.rows) for name, d in self.denoisers.items()}

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, todo: Sequence[tuple[int, Any]], measure: Callable[[Any], Any]
    ) -> Iterator[tuple[int, Any, Any]]:
        """Measure each ``(index, item)`` of ``todo``; yield ``(index, item, outcome)`` as items
        finish (in item order among those that finish together), the outcome being the row
        ``measure`` returned or the exception it raised (a BaseException that is not an
        Exception, such as Ctrl-C, is raised, when one item at a time)."""
        if self.in_flight == 1:
            for index, item in todo:
                if self._stop_at is not None and index > self._stop_at:
                    return
                try:
                    outcome = measure(item)
                except Exception as err:
                    outcome = err
                yield index, item, outcome
            return
        waiting = deque(todo)
        while True:
            with self._cond:
                while waiting and len(self._live) < self.in_flight and self._stop_at is None:
                    self._start(*waiting.popleft(), measure)
                while any(slot.state == RUNNING for slot in self._live):
                    self._cond.wait()
                done = sorted((s for s in self._live if s.state == DONE), key=lambda s: s.index)
                for slot in done:
                    self._live.remove(slot)
                live = bool(self._live)
            for slot in done:  # ended, or about to: none may outlive the run (see close)
                slot.thread.join()
            if done:  # their places are filled before the next call is decided
                for slot in done:
                    # An item after a failed one (stop_after, perhaps during this loop) is
                    # dropped even when it finished in the same round: as one by one.
                    stopped = self._stop_at is not None and slot.index > self._stop_at
                    if not slot.cancelled and not stopped:
                        yield slot.index, slot.item, slot.outcome
                continue
            if not live:
                return
            self._flush()

    def stop_after(self, index: int) -> None:
        """Measure no item after ``index`` (those in flight are stopped; no new one starts);
        the items before it finish."""
        with self._cond:
            self._stop_at = index if self._stop_at is None else min(index, self._stop_at)
            for slot in self._live:
                if slot.index > self._stop_at:
                    self._cancel(slot)

    def close(self) -> None:
        """Stop every item still in flight: each raises :class:`Cancelled` in its thread at its
        next denoiser call; wait up to CLOSE_WAIT_S in all for their threads to end (daemons:
        one still busy after that keeps no process alive)."""
        with self._cond:
            self.closed = True
            for slot in self._live:
                self._cancel(slot)
            self._queues.clear()
            threads = [slot.thread for slot in self._live if slot.thread is not None]
        # A thread still inside torch when the interpreter exits can abort the process (seen
        # under Accelerate); cancelled ones end at their next denoiser call.
        deadline = time.monotonic() + CLOSE_WAIT_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, Any]:
        """The denoiser calls made since the scheduler was made, the rows they carried and the
        mean fill, rows / (calls x batch size), per model and in all."""
        models = {}
        for name, d in self.denoisers.items():
            calls, rows = d.calls - self._counts[name][0], d.rows - self._counts[name][1]
            models[name] = _fill(calls, rows, self.batch_size)
        calls = sum(m["calls"] for m in models.values())
        rows = sum(m["rows"] for m in models.values())
        return {
            "in_flight": self.in_flight,
            "batch_size": self.batch_size,
            **_fill(calls, rows, self.batch_size),
            "models": models,
        }

    # --- the items' threads -------------------------------------------------------------------
    def _start(self, index: int, item: Any, measure: Callable[[Any], Any]) -> None:
        slot = _Slot(self, index, item)
        self._live.append(slot)
        slot.thread = threading.Thread(
            target=self._work, args=(slot, measure), name=f"item-{index}", daemon=True
        )
        slot.thread.start()

    def _work(self, slot: _Slot, measure: Callable[[Any], Any]) -> None:
        _local.slot = slot
        try:
            slot.outcome = measure(slot.item)
        except BaseException as err:  # given to the runner, which decides (Cancelled included)
            slot.outcome = err
        finally:
            _local.slot = None
            with self._cond:
                slot.state = DONE
                self._cond.notify_all()

    def submit(
        self, denoiser: BatchedDenoiser, x: torch.Tensor, logsnr: torch.Tensor, conds: Any
    ) -> Any:
        """Queue a denoiser call of the item this thread measures; return its output when its
        rows have come back (or raise the call's error, or :class:`Cancelled`)."""
        slot: _Slot = _local.slot
        if len(x) == 0:
            return denoiser.call(x, logsnr, conds)
        request = _Request(denoiser, x, logsnr, list(conds), slot)
        with self._cond:
            if self.closed or slot.cancelled:
                raise Cancelled
            slot.request, slot.state = request, WAITING
            self._cond.notify_all()
            while not request.done:
                self._cond.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _cancel(self, slot: _Slot) -> None:
        """(With the lock held.) Stop ``slot``: its pending request raises Cancelled."""
        slot.cancelled = True
        if slot.state == WAITING and slot.request is not None:
            self._drop(slot.request)
            self._finish(slot.request, error=Cancelled())

    def _finish(
        self, request: _Request, result: Any = None, error: BaseException | None = None
    ) -> None:
        """(With the lock held.) Hand ``request``'s output (or error) to its item, which runs
        again from here: the next decision waits for it."""
        request.result, request.error, request.done = result, error, True
        slot = request.slot
        if slot.request is request:
            slot.request, slot.state = None, RUNNING
        self._cond.notify_all()

    # --- the calls ------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Every item in flight waits: queue their new requests (in item order), send every
        full call, and if that lets no item go on, the fullest queue's rows in a partial call
        (the other queues may yet gain rows from the items it wakes)."""
        with self._cond:
            for slot in sorted(self._live, key=lambda s: s.index):
                request = slot.request
                if request is not None and not request.queued:
                    request.queued = True
                    self._queues.setdefault(request.key, []).append(request)
        assert self.batch_size is not None
        woke = False
        for queue in list(self._queues.values()):
            while _unsent(queue) >= self.batch_size:
                woke |= self._send(queue, self.batch_size)
        if not woke:  # the first of the fullest queues: it wakes every item it holds
            queue = max((q for q in self._queues.values() if q), key=_unsent)
            self._send(queue, _unsent(queue))
        self._queues = {key: queue for key, queue in self._queues.items() if queue}

    def _send(self, queue: list[_Request], n: int) -> bool:
        """One call of the first ``n`` rows of ``queue``; whether it completed a request."""
        segments = []  # (request, first row, end row)
        while n > 0:
            request = queue[0]
            take = min(n, len(request.x) - request.sent)
            segments.append((request, request.sent, request.sent + take))
            request.sent += take
            n -= take
            if request.sent == len(request.x):
                queue.pop(0)
        denoiser = segments[0][0].denoiser
        outputs = _call(denoiser, segments)
        completed = False
        with self._cond:
            for (request, _, hi), out in zip(segments, outputs, strict=True):
                if request.done:  # failed in an earlier piece, or cancelled
                    continue
                if isinstance(out, BaseException):
                    self._drop(request)
                    self._finish(request, error=out)
                    completed = True
                    continue
                request.pieces.append(out)
                if hi == len(request.x):
                    pieces = request.pieces
                    result = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
                    self._finish(request, result=result)
                    completed = True
        return completed

    def _drop(self, request: _Request) -> None:
        """Take a failed request's unsent rows out of its queue."""
        queue = self._queues.get(request.key, [])
        if request in queue:
            queue.remove(request)


def _call(denoiser: BatchedDenoiser, segments: list[tuple[_Request, int, int]]) -> list[Any]:
    """Each segment's output from one call of their rows. If the call fails or returns what
    cannot be split, each segment is sent alone, so that the error (or the malformed output,
    which the item's own checks then name) is its own item's, as when items ran one by one."""
    x = torch.cat([r.x[lo:hi] for r, lo, hi in segments])
    logsnr = torch.cat([r.logsnr[lo:hi] for r, lo, hi in segments])
    conds = [c for r, lo, hi in segments for c in r.conds[lo:hi]]
    if len(segments) > 1:
        try:
            out = denoiser.call(x, logsnr, conds)
        except Exception:
            out = None
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            bounds = [hi - lo for _, lo, hi in segments]
            return list(torch.split(out, bounds))
    outputs: list[Any] = []
    for request, lo, hi in segments:
        try:
            out = denoiser.call(request.x[lo:hi], request.logsnr[lo:hi], request.conds[lo:hi])
        except Exception as err:
            outputs.append(err)
            continue
        # A whole request's output goes back as it is: the item's checks name what is wrong.
        shape = (hi - lo, *x.shape[1:])
        whole = lo == 0 and hi == len(request.x)
        if not whole and not (isinstance(out, torch.Tensor) and out.shape == shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            out = DenoiserOutputError(f"denoiser returned {got} for noisy inputs of shape {shape}")
        outputs.append(out)
    return outputs


def _unsent(queue: list[_Request]) -> int:
    """Rows of ``queue`` not yet put into a call."""
    return sum(len(r.x) - r.sent for r in queue)


def _fill(calls: int, rows: int, batch_size: int | None) -> dict[str, Any]:
    """Calls, rows and the mean fill of the calls (None without calls)."""
    fill = rows / (calls * batch_size) if calls and batch_size else None
    return {"calls": calls, "rows": rows, "fill": fill}
