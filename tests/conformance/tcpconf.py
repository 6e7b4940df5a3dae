#!/usr/bin/python3
"""tcpconf: run the wire-level TCP conformance cases (docs/conformance.md).

    tcpconf.py --iface TAP --app conf_app --preload libshmnet_preload.so --sock SOCK
               --ctl shmnetctl [--delack-ms 100] [--rto-min-ms 200] [CASE_OR_GLOB...]
    tcpconf.py --list

Run inside the namespace holding the kernel side of the daemon's TAP (no address on it:
tests/integration/conformance.sh sets it up). Prints one line per case on stdout,
"PASS name" or "FAIL name: why", then "DONE n"; a failing case's trace (frames both ways
with relative sequence numbers, app commands) goes to stderr.
"""
import argparse
import fnmatch
import glob
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import engine  # noqa: E402


def load_cases():
    for path in sorted(glob.glob(os.path.join(HERE, "cases", "*.py"))):
        name = "cases_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return engine.CASES


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface")
    ap.add_argument("--app")
    ap.add_argument("--preload")
    ap.add_argument("--sock")
    ap.add_argument("--ctl")
    ap.add_argument("--delack-ms", type=int, default=100)
    ap.add_argument("--rto-min-ms", type=int, default=200)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    cases = load_cases()
    names = [c[0] for c in cases]
    if len(set(names)) != len(names):
        print("duplicate case names", file=sys.stderr)
        return 2
    if a.list:
        for name, _fn, doc in cases:
            print("%s %s" % (name, doc.splitlines()[0] if doc else ""))
        return 0
    sel = [c for c in cases if not a.names or any(fnmatch.fnmatch(c[0], p) for p in a.names)]
    if not sel:
        print("no case matches %s" % a.names, file=sys.stderr)
        return 2
    eng = engine.Engine(a.iface, a.app, a.preload, a.sock, a.ctl, a.delack_ms, a.rto_min_ms)
    nfail = 0
    for idx, (name, fn, _doc) in enumerate(cases):
        if (name, fn, _doc) not in sel:
            continue
        eng.wire.clear()
        eng.trace.reset()
        t = engine.Case(eng, idx, name)
        t0 = time.monotonic()
        err = None
        try:
            fn(t)
        except engine.Fail as e:
            err = str(e)
        except AssertionError as e:
            err = "assertion: %s" % e
        except Exception as e:  # an engine bug: the case fails, the run goes on
            err = "engine error: %s: %s" % (type(e).__name__, e)
            traceback.print_exc(file=sys.stderr)
        finally:
            t.close()
        dt = time.monotonic() - t0
        if err is None:
            print("PASS %s" % name, flush=True)
            print("%s: pass (%.2fs)" % (name, dt), file=sys.stderr, flush=True)
        else:
            nfail += 1
            print("FAIL %s: %s" % (name, " ".join(err.split())), flush=True)
            print("--- %s: FAIL (%.2fs), trace (relative sequence numbers):" % (name, dt),
                  file=sys.stderr)
            for line in eng.trace.dump():
                print("    " + line, file=sys.stderr)
            sys.stderr.flush()
    print("DONE %d" % len(sel), flush=True)
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
