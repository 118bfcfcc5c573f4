"""Working memory of ``le_mmse`` does not grow with the number of training images N (course/05_closed_form.md, eq-attention).

Each case runs in a fresh subprocess that (1) loads its inputs (training tensor or the base crops
a generator augments on the fly, plus the measurement), (2) warms ``le_mmse`` up on two images,
(3) returns freed heap to the OS (``malloc_trim``; children run with a fixed glibc mmap threshold so
that large temporaries are really unmapped when freed), resets the peak-RSS counter
(``echo 5 > /proc/self/clear_refs``; where that is unavailable the
``ru_maxrss`` peak is used and the baseline is the current RSS), (4) runs ``le_mmse`` once and
reports ``peak RSS − RSS before the call``: the working memory above the input tensors. On CUDA
(``--device cuda``) it is ``torch.cuda.max_memory_allocated`` minus the allocation before the call.

Cases (1 measurement, 32×32 grey photos, P = 5, σ = 0.2):

* ``tensor``, N = 1,000 and N = 8,000, fixed ``--chunk-size`` (default 64);
* ``tensor``, N = 1,000 and N = 8,000, default chunking (``max_memory`` = 256 MiB);
* ``stream``, N = 8,000, a generator that builds chunks of ``--chunk-size`` augmented crops on
  demand, so the training set never sits in memory whole (fixed ``--chunk-size``).

N = 8,000 is reached from the 3,651 ``photos`` training crops plus circular shifts and flips of
them (copy k of crop j: flipped left-right if k is odd, rolled by (5k, 3k) pixels).

    python benchmarks/memory.py [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import augmented, environment, mark, table, write_json

from lemmse_lite.data import load
from lemmse_lite.estimators import DEFAULT_MAX_MEMORY, le_mmse


def stream_of(base, n, chunk):
    """A one-shot generator of augmented chunks (nothing but one chunk is materialised)."""
    for i0 in range(0, n, chunk):
        yield augmented(base, i0, min(n, i0 + chunk))


# glibc raises its mmap threshold after freeing large blocks, after which big temporaries come from
# the heap and stay resident when freed; a fixed threshold keeps every large block mmapped, so RSS
# follows the live allocations (the child processes run with it).
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _status():
    try:
        with open("/proc/self/status") as f:
            s = f.read()
        return {k: int(re.search(k + r":\s+(\d+)", s).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}
    except (OSError, AttributeError):
        return None


def _release_free_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so that the RSS before the call
    holds only live data and the call cannot silently reuse resident free pages."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        st = _status()
        return st is not None and st["VmHWM"] <= st["VmRSS"] * 1.01 + 4096
    except OSError:
        return False


def run_case(args):
    """One measurement, one case (``args.case``, ``args.n``, ``args.chunk_size``): the dict of
    results (in a child process: printed as one JSON line)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = load("photos", "train", size=args.size).to(device)
    x = load("photos", "test", n=1, size=args.size).to(device)
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)
    kw = {"max_memory": args.max_memory} if args.chunk_size is None else {"chunk_size": args.chunk_size}
    if args.case == "tensor":
        train = augmented(base, 0, args.n)
        del base
    else:
        train = stream_of(base, args.n, args.chunk_size or 64)
    le_mmse(y, augmented(x, 0, 2), 0.2, args.patch, **kw)  # warm-up: kernels, thread pool, allocator
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        le_mmse(y, train, 0.2, args.patch, **kw)
        torch.cuda.synchronize()
        peak, method = torch.cuda.max_memory_allocated(), "cuda.max_memory_allocated"
    else:
        exact = _reset_peak()
        before = _status()["VmRSS"] if _status() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        le_mmse(y, train, 0.2, args.patch, **kw)
        if exact:
            peak, method = _status()["VmHWM"], "VmHWM after clear_refs"
        else:
            peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    del train
    gc.collect()
    return {"working_bytes": max(0, peak - before), "before_bytes": before, "method": method}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="smoke run: 8×8 crops, N = 50 vs 400")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--patch", type=int, default=5)
    p.add_argument("--size", type=int, default=None, help="image side (default: native 32)")
    p.add_argument("--n-small", type=int, default=1000)
    p.add_argument("--n-large", type=int, default=8000)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--max-memory", type=int, default=DEFAULT_MAX_MEMORY,
                   help="le_mmse's max_memory for the default-chunking cases (bytes)")
    p.add_argument("--jobs", type=int, default=1, help="child processes at once (memory only)")
    p.add_argument("--in-process", action="store_true",
                   help="run the cases one after the other in this process (peak reset between "
                        "cases; approximate, freed memory can be reused); implied by --small")
    # internal: one case in a child process
    p.add_argument("--case", choices=["tensor", "stream"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--default-chunk", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.small:
        args.size, args.n_small, args.n_large, args.chunk_size = 16, 50, 400, 16
        args.max_memory, args.in_process = 2 * 2**20, True
    return args


def child_cmd(args, case, n, chunk):
    cmd = [sys.executable, os.path.abspath(__file__), "--case", case, "--n", str(n),
           "--threads", str(args.threads), "--device", args.device, "--patch", str(args.patch),
           "--max-memory", str(args.max_memory)]
    if args.size:
        cmd += ["--size", str(args.size)]
    if chunk is not None:
        cmd += ["--chunk-size", str(chunk)]
    else:
        cmd += ["--default-chunk"]
    return cmd


def run_children(args, specs):
    """Run the child processes of ``specs`` [(case, n, chunk)], ``args.jobs`` at a time (memory
    only: the processes do not share anything), and return their JSON results in order."""
    if args.in_process:
        torch.set_num_threads(args.threads)
        return [run_case(argparse.Namespace(**{**vars(args), "case": case, "n": n, "chunk_size": chunk}))
                for case, n, chunk in specs]
    results = [None] * len(specs)
    pending = list(enumerate(specs))
    running = []
    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            i, spec = pending.pop(0)
            proc = subprocess.Popen(child_cmd(args, *spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=CHILD_ENV)
            running.append((i, spec, proc))
        i, spec, proc = running.pop(0)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"case {spec} failed:\n{err}")
        results[i] = json.loads(out.strip().splitlines()[-1])
    return results


def verdict(ratio, small_mib, large_mib):
    if max(small_mib, large_mib) < 1.0:
        return "n/a (< 1 MiB)"
    return mark(abs(ratio - 1) <= 0.2)


def main(argv=None):
    args = parse(argv)
    if args.case is not None:
        if args.default_chunk:
            args.chunk_size = None
        print(json.dumps(run_case(args)))
        return None
    env = environment(args.device)
    print(f"memory: {env}")
    plans = [
        (f"tensor, chunk_size={args.chunk_size}", "tensor", args.chunk_size),
        (f"tensor, default chunks (max_memory={args.max_memory / 2**20:g} MiB)", "tensor", None),
    ]
    rows, out = [], {"env": env, "args": vars(args), "cases": []}
    specs = [(case, n, chunk) for _, case, chunk in plans for n in (args.n_small, args.n_large)]
    specs.append(("stream", args.n_large, args.chunk_size))
    results = run_children(args, specs)
    for p, (label, case, chunk) in enumerate(plans):
        r_small, r_large = results[2 * p], results[2 * p + 1]
        ratio = r_large["working_bytes"] / max(r_small["working_bytes"], 1)
        rows.append({"case": label, f"peak MiB N={args.n_small}": r_small["working_bytes"] / 2**20,
                     f"peak MiB N={args.n_large}": r_large["working_bytes"] / 2**20,
                     "ratio large/small": ratio,
                     "within 20%": verdict(ratio, r_small["working_bytes"] / 2**20, r_large["working_bytes"] / 2**20),
                     "method": r_large["method"]})
    # streamed generator at N large vs the fixed-chunk tensor case at N small
    r_stream = results[-1]
    ref = rows[0][f"peak MiB N={args.n_small}"]
    ratio = r_stream["working_bytes"] / 2**20 / max(ref, 1e-9)
    rows.append({"case": f"stream (generator), chunk_size={args.chunk_size}",
                 f"peak MiB N={args.n_small}": ref, f"peak MiB N={args.n_large}": r_stream["working_bytes"] / 2**20,
                 "ratio large/small": ratio,
                 "within 20%": verdict(ratio, ref, r_stream["working_bytes"] / 2**20),
                 "method": r_stream["method"]})
    out["cases"] = rows
    side = args.size or 32
    how = "in one process, peak reset per case" if args.in_process else "one fresh subprocess per case"
    print(f"\n== Memory == working memory above inputs ({how}), 1 measurement, {side}x{side}, P={args.patch} "
          f"(stream row: generator at N={args.n_large} vs the fixed-chunk tensor at N={args.n_small})")
    print(table(rows, ["case", f"peak MiB N={args.n_small}", f"peak MiB N={args.n_large}",
                       "ratio large/small", "within 20%", "method"]))
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
