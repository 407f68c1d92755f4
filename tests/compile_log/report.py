"""Sum the compile logs of tests/compile_log/sitecustomize.py per test file (or per test, --tests).

Columns, in seconds: XLA compiles (backend_compile, persistent-cache loads included), tracing, lowering
to MLIR, what the persistent cache saved, and the lifetimes of the commands that tests started.
"""
import argparse
import collections
import glob
import os

COLUMNS = {"backend_compile_duration": "compile", "jaxpr_trace_duration": "trace",
           "jaxpr_to_mlir_module_duration": "lower", "compile_time_saved_sec": "saved"}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log_dir")
    p.add_argument("--tests", action="store_true", help="per test, not per file")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    sums = collections.defaultdict(collections.Counter)
    for path in glob.glob(os.path.join(args.log_dir, "*.tsv")):
        for line in open(path):
            row = line.rstrip("\n").split("\t")
            test = row[2] if args.tests else row[2].split("::")[0]
            if row[0] == "event" and row[4] in COLUMNS:
                sums[test][COLUMNS[row[4]]] += float(row[6])
            elif row[0] == "exit" and "pytest" not in row[3] and "xdist" not in row[3] and row[3] != "-c":
                sums[test]["commands"] += float(row[1])
    cols = ("compile", "trace", "lower", "saved", "commands")
    print(" ".join(f"{c:>9}" for c in cols), " test")
    work = lambda c: c["compile"] + c["trace"] + c["lower"] + c["commands"]
    for test, c in sorted(sums.items(), key=lambda kv: -work(kv[1]))[:args.top]:
        print(" ".join(f"{c[k]:9.1f}" for k in cols), "", test)
    total = sum(sums.values(), collections.Counter())
    print(" ".join(f"{total[k]:9.1f}" for k in cols), "  all")


if __name__ == "__main__":
    main()
