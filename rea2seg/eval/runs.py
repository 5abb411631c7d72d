"""The run-folder kit shared by ``rea2seg eval``, the mask-scoring export and ``rea2seg batch``: one writer per
folder, an append-only JSONL result log that survives a kill, resuming only when the settings match, per-sample work
(in this process or on Ray) with bad samples recorded (never fatal), atomic files, and a progress bar."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import InputError, OutputExistsError
from ..images import atomic_write_bytes
from .datasets import EvalDataset
from .work import Outcome, SampleWork, run_whole

RUN_FILE = "run.json"


# ---- the append-only result log ---------------------------------------------------------------------------------

class ResultLog:
    """JSONL with one record per sample, written with a single ``write`` + ``fsync`` per line, so a killed run loses
    at most the line being written. ``load`` drops a partial last line; a corrupt line elsewhere is an error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the tail of a line cut by a kill: drop it so the sample is redone
            with open(self.path, "r+b") as f:
                f.truncate(end)
            data = data[:end]
        records: dict[str, dict] = {}
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = rec["id"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{self.path} line {n} is corrupt; delete that line or pass --force to start "
                                 f"over") from None
            records.setdefault(key, rec)
        return records

    def append(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """One writer per output folder (an OS lock, released automatically if the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; running two evals on one folder is the user's call
        yield
        return
    fd = os.open(out_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another rea2seg run is writing to {out_dir}; wait for it or choose another "
                             f"--out") from None
        yield
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode(), overwrite=True)


def make_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file; give a folder")
    out_dir.mkdir(parents=True, exist_ok=True)


def prepare_out_dir(out_dir: Path, run_info: dict, force: bool, files: Sequence[str],
                    dirs: Sequence[str] = ()) -> None:
    """Create ``out_dir`` for a run described by ``run_info``; resume if it holds the same run, refuse otherwise
    (unless ``force``, which deletes this tool's ``files`` and ``dirs`` there, nothing else, and starts over)."""
    make_out_dir(out_dir)
    run_path = out_dir / RUN_FILE
    ours = [out_dir / f for f in files if (out_dir / f).exists()]
    if force:
        for p in ours:
            p.unlink()
        for d in dirs:
            if (out_dir / d).is_dir():
                shutil.rmtree(out_dir / d)
    elif run_path.exists():
        try:
            previous = json.loads(run_path.read_text())
        except ValueError:
            raise InputError(f"{run_path} is corrupt; pass --force to start over") from None
        diff = [k for k in sorted(set(previous) | set(run_info)) if previous.get(k) != run_info.get(k)]
        if diff:
            raise OutputExistsError(f"{out_dir} holds a run with different settings ({', '.join(diff)}); choose "
                                    f"another --out, or pass --force to delete it and start over")
        return
    elif ours:
        raise OutputExistsError(f"{out_dir} already has {', '.join(p.name for p in ours)} from something else; "
                                f"choose another --out, or pass --force to replace them")
    write_json(run_path, run_info)


# ---- progress -----------------------------------------------------------------------------------------------------

class ProgressBar:
    """tqdm when installed, else one stderr line per sample with an ETA."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True) -> None:
        self.total, self.done, self.start_done = total, initial, initial
        self.t0 = time.monotonic()
        self.bar = None
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="sample", file=sys.stderr,
                            dynamic_ncols=True)
        except ImportError:
            self.desc = desc

    def update(self, postfix: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)
            return
        elapsed = time.monotonic() - self.t0
        rate = elapsed / max(1, self.done - self.start_done)
        eta = rate * (self.total - self.done)
        print(f"{self.desc} {self.done}/{self.total} [{elapsed:.0f}s elapsed, ETA {eta:.0f}s, {rate:.2f} s/sample] "
              f"{postfix}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def ensure_pipeline(pipe, factory: Callable[[], object] | None, needed: bool):
    """``pipe``, or one built by ``factory`` (only when some sample is left to do, so a finished run loads nothing)."""
    if pipe is None and needed:
        pipe = factory() if factory else None
        if pipe is None:
            raise InputError("no pipeline given")
    return pipe


def commit(out_dir: Path, log: ResultLog, records: dict[str, dict], outcome: Outcome) -> None:
    """Write a sample's files (each atomically), then log its record: a logged sample always has its files, and a
    sample killed before its record is logged is redone on resume (its files overwritten), never duplicated."""
    for rel, data in outcome.files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data, overwrite=True)
    log.append(outcome.record)
    records[outcome.record["id"]] = outcome.record


def run_samples(dataset: EvalDataset, keys: Sequence[str], out_dir: Path, log: ResultLog, records: dict[str, dict],
                work: SampleWork, pipe=None, pipeline_factory: Callable[[], object] | None = None,
                progress: bool = True, ray=None) -> bool:
    """Process the ``keys`` not yet in ``records`` with ``work``, committing each sample's outcome as it is made.
    In this process (``pipe``, or one built by ``pipeline_factory`` only if something is left to do), or on Ray when
    ``ray`` is a ``ray_runner.RayOptions`` (each actor calls ``pipeline_factory``). Unusable samples, and samples
    the pipeline refuses with an ``InputError``, are recorded as skipped with the reason. Returns True if
    interrupted by Ctrl-C (everything recorded so far is kept)."""
    todo = [k for k in keys if k not in records]
    bar = ProgressBar(len(keys), len(keys) - len(todo), work.desc, progress)
    if not todo:
        outcomes: Iterable[Outcome] = ()
    elif ray is not None:
        from .ray_runner import outcomes_on_ray

        outcomes = outcomes_on_ray(dataset, todo, work, pipeline_factory, ray)
    else:
        pipe = ensure_pipeline(pipe, pipeline_factory, True)
        outcomes = (run_whole(work, pipe, sample) for sample in dataset.iter_samples(todo))
    try:
        for outcome in outcomes:
            if outcome.skipped:
                warn(f"skipped {outcome.record['id']}: {outcome.record['skipped']}")
            commit(out_dir, log, records, outcome)
            bar.update(work.postfix(outcome.record))
    except KeyboardInterrupt:
        return True
    finally:
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()
        bar.close()
    return False


def raise_interrupted(done: int, total: int) -> None:
    """After Ctrl-C: say how far the run got and how to go on, then stop (the records so far are kept)."""
    print(f"interrupted: {done}/{total} samples done; run the same command again to resume", file=sys.stderr)
    raise KeyboardInterrupt


def select_keys(dataset: EvalDataset, limit: int | None) -> list[str]:
    keys = dataset.keys()
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        keys = keys[:limit]
    return keys
