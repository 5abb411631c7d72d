"""Runs on Ray: a Ray Data pipeline with one actor pool per stage, for ``rea2seg batch``, ``rea2seg eval`` and the
mask-scoring export (``--ray``).

    sample ids left to do ──▶ discovery actors ──▶ scorer actors ──▶ this process
    (from_items, a few         load the sample,     score + select,     writes the files and the JSONL
     ids per block)            VLM attention + SAM  record + PNG bytes  record (runs.commit), in arrival order

Each actor builds its pipeline once (``pipeline_factory``) and keeps it. The discovery answer travels to the scorer
as the engine's own ``SegmentationResult`` (``work.pack_found``: masks as RLE, the heat map as its token grid); the
scorer runs exactly what ``Rea2Seg.segment`` runs after discovery, so the masks and scores equal a one-process run.
Only this process writes to the run folder, so workers need the input data (a shared path) but no shared output
folder, and a killed run resumes from its JSONL like any other: samples in flight are redone, none is duplicated.
Backpressure is Ray Data's (bounded object-store budget, at most ``max_tasks_in_flight_per_actor`` queued per actor);
rows are single samples, so memory per row is one image and its candidate masks.
"""
from __future__ import annotations

import logging
import math
import pickle
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from ..errors import InputError, Rea2SegError
from .datasets import EvalDataset, SkippedSample
from .work import Outcome, SampleWork, pack_found, unpack_found

#: more blocks than this and each block holds several sample ids (Ray's per-block bookkeeping stays small)
MAX_BLOCKS = 20_000


@dataclass(frozen=True)
class RayOptions:
    """address: "auto" starts a local Ray (or joins the one ``ray start`` runs on this machine, or ``RAY_ADDRESS``);
    anything else is a cluster address (``HOST:6379``, ``ray://HOST:10001``). discovery_actors / scorer_actors: actors
    per pool. discovery_gpus / scorer_gpus: GPUs each actor of the pool reserves; None = 1 when the cluster has a
    GPU, else 0; fractions share a GPU (0.5 = two actors per GPU). num_cpus_per_actor: CPUs each actor reserves (its
    torch threads on a CPU). init: extra ``ray.init`` arguments (e.g. ``num_cpus`` for a local Ray)."""

    address: str = "auto"
    discovery_actors: int = 1
    scorer_actors: int = 1
    discovery_gpus: float | None = None
    scorer_gpus: float | None = None
    num_cpus_per_actor: float = 1.0
    max_tasks_in_flight_per_actor: int = 2
    init: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.discovery_actors < 1 or self.scorer_actors < 1:
            raise InputError("--actors must be at least 1 per stage")
        if any(g is not None and g < 0 for g in (self.discovery_gpus, self.scorer_gpus)):
            raise InputError("--num-gpus-per-actor must be 0 or more (fractions share a GPU)")
        if self.num_cpus_per_actor <= 0:
            raise InputError("--num-cpus-per-actor must be more than 0")


def parse_pair(text: str, flag: str, kind=int) -> tuple:
    """``"2"`` -> (2, 2) for the discovery and the scorer pool; ``"3,1"`` -> (3, 1)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [kind(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or (kind is int and min(values, default=0) < 1) or min(values, default=-1) < 0:
        what = "each at least 1" if kind is int else "each 0 or more"
        raise InputError(f"{flag} takes one value (both pools) or two, discovery,scorer ({what}); got {text!r}")
    return (values[0], values[-1])


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("--ray needs Ray Data: pip install 'rea2seg[ray]' (or pip install 'ray[data]')") from None
    return ray


def connect(options: RayOptions) -> bool:
    """Join or start Ray (unless this process already did); True if this call started it."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": True,
              **options.init}
    if options.address not in ("auto", "", None):
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot join the Ray cluster at {options.address}: {str(e).splitlines()[0][:200]}; check "
                         f"the address (`ray status` on the head node prints it) or use --ray auto") from None
    return True


def _check_resources(ray, options: RayOptions, pools: Sequence[tuple[str, int, float]]) -> None:
    """A pool that cannot start waits forever; say so instead (a cluster with an autoscaler may still grow)."""
    total = ray.cluster_resources()
    need_cpu = sum(size for _, size, _ in pools) * options.num_cpus_per_actor
    need_gpu = sum(size * gpus for _, size, gpus in pools)
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if need_cpu <= have_cpu + 1e-9 and need_gpu <= have_gpu + 1e-9:
        return
    what = " + ".join(f"{size} {name}" for name, size, _ in pools)
    msg = (f"{what} actors need {need_cpu:g} CPUs and {need_gpu:g} GPUs, but the Ray cluster has {have_cpu:g} CPUs "
           f"and {have_gpu:g} GPUs; lower --actors, --num-cpus-per-actor or --num-gpus-per-actor")
    if options.address in ("auto", "", None):
        raise InputError(msg)
    print(f"warning: {msg} (waiting in case the cluster scales up)", file=sys.stderr, flush=True)


def _rea2seg_error(exc: BaseException) -> Rea2SegError | None:
    """The engine error behind a Ray failure, if there is one (Ray wraps what an actor raised)."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, Rea2SegError):
            return e
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


# ---- the actors ---------------------------------------------------------------------------------------------------

def _quiet_downloads() -> None:
    """No per-file loading bars from every actor in the driver's log."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _Actor:
    """Builds its pipeline once. An engine error while building (a missing model, say) is kept and sent back with
    every row, so the driver stops with that one-line message instead of Ray restarting the actor."""

    def __init__(self, pipeline_factory: Callable[[], object]) -> None:
        _quiet_downloads()
        self.error: Rea2SegError | None = None
        try:
            self.pipe = pipeline_factory()
        except Rea2SegError as e:
            self.pipe, self.error = None, e

    def _reply(self, keys: list[str], items: list) -> dict:
        if self.error is not None:
            items = [{"error": self.error}] * len(keys)
        return {"key": keys, "payload": [pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL) for x in items]}


class DiscoveryActor(_Actor):
    """Holds a pipeline (the discovery VLM and SAM) and the dataset; turns a batch of sample ids into discovery
    answers (or, for work without a scorer, into finished outcomes)."""

    def __init__(self, dataset: EvalDataset, work: SampleWork, pipeline_factory: Callable[[], object]) -> None:
        super().__init__(pipeline_factory)
        self.dataset, self.work = dataset, work
        if self.pipe is not None and work.needs_scorer and self.pipe.scorer is not self.pipe.vlm:
            self.pipe.scorer = self.pipe.vlm  # a separate scorer lives in the scorer actors: free it here
            self.pipe.clear_cache()

    def __call__(self, batch: dict) -> dict:
        keys = [str(k) for k in batch["key"]]
        if self.error is not None:
            return self._reply(keys, [])
        return self._reply(keys, [self._one(sample) for sample in self.dataset.iter_samples(keys)])

    def _one(self, sample):
        if isinstance(sample, SkippedSample):
            return self.work.skipped(sample, sample.reason)
        try:
            found = self.work.discover(self.pipe, sample)
            if not self.work.needs_scorer:
                return self.work.finish(self.pipe, sample, found)
        except InputError as e:
            return self.work.skipped(sample, f"pipeline refused it: {e}")
        return {"sample": sample, "found": pack_found(found)}


class ScorerActor(_Actor):
    """Holds a pipeline (the scorer VLM); scores the candidates of each discovery answer, selects, and returns the
    finished outcome."""

    def __init__(self, work: SampleWork, pipeline_factory: Callable[[], object]) -> None:
        super().__init__(pipeline_factory)
        self.work = work
        if self.pipe is not None:
            self.pipe.sam = None  # scoring never touches SAM: free it
            self.pipe.clear_cache()

    def __call__(self, batch: dict) -> dict:
        keys = [str(k) for k in batch["key"]]
        out = []
        for payload in batch["payload"]:
            item = pickle.loads(payload)
            if isinstance(item, dict) and "sample" in item and self.error is None:
                sample = item["sample"]
                try:
                    item = self.work.finish(self.pipe, sample, unpack_found(item["found"], sample.image))
                except InputError as e:
                    item = self.work.skipped(sample, f"pipeline refused it: {e}")
            out.append(item)  # an Outcome, or an error from upstream: passed on
        return self._reply(keys, out)


# ---- the driver ---------------------------------------------------------------------------------------------------

def outcomes_on_ray(dataset: EvalDataset, keys: Sequence[str], work: SampleWork,
                    pipeline_factory: Callable[[], object] | None, options: RayOptions) -> Iterator[Outcome]:
    """Stream the outcomes of ``keys`` (in the order they finish) from a Ray Data pipeline; the caller commits
    them. Closing the iterator stops the pipeline (and the local Ray this call started)."""
    if pipeline_factory is None:
        raise InputError("a Ray run builds its models in each actor: pass pipeline_factory (a picklable callable "
                         "returning a Rea2Seg), not a loaded pipeline")
    ray = _ray()
    started = connect(options)
    try:
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts committed samples
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours
        default_gpus = 1.0 if ray.cluster_resources().get("GPU", 0.0) >= 1 else 0.0
        pools = [("discovery", options.discovery_actors,
                  default_gpus if options.discovery_gpus is None else options.discovery_gpus)]
        if work.needs_scorer:
            pools.append(("scorer", options.scorer_actors,
                          default_gpus if options.scorer_gpus is None else options.scorer_gpus))
        _check_resources(ray, options, pools)
        per_block = max(1, math.ceil(len(keys) / MAX_BLOCKS))
        ds = ray.data.from_items([{"key": k} for k in keys], override_num_blocks=math.ceil(len(keys) / per_block))
        actors = {"discovery": (DiscoveryActor, {"dataset": dataset, "work": work,
                                                 "pipeline_factory": pipeline_factory}),
                  "scorer": (ScorerActor, {"work": work, "pipeline_factory": pipeline_factory})}
        for name, size, gpus in pools:
            cls, kwargs = actors[name]
            ds = ds.map_batches(
                cls, fn_constructor_kwargs=kwargs, batch_size=1, num_cpus=options.num_cpus_per_actor,
                num_gpus=gpus, compute=ActorPoolStrategy(
                    size=size, max_tasks_in_flight_per_actor=options.max_tasks_in_flight_per_actor))
        try:
            for row in ds.iter_rows():
                item = pickle.loads(row["payload"])
                if isinstance(item, dict) and "error" in item:
                    raise item["error"]
                yield item
        except (KeyboardInterrupt, GeneratorExit, Rea2SegError):
            raise
        except Exception as e:
            cause = _rea2seg_error(e)
            if cause is not None:
                raise cause.__class__(str(cause)) from None
            raise RuntimeError(f"a Ray worker failed: {e.__class__.__name__}: "
                               f"{(str(e).strip().splitlines() or [''])[-1][:300]}") from e
    finally:
        if started:
            ray.shutdown()
