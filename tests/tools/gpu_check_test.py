#!/usr/bin/env python3
"""Runs scripts/gpu_check.sh without a GPU, against stand-ins: nvidia-smi, compute-sanitizer and the binaries
(the test binary, culayers_bench, the demo and the engine example) are small scripts that print what the
real ones print. A lent GPU machine gives a session a few minutes, so a broken check script costs a whole
GPU run; this checks its flow here: every step runs and passes, the benchmark parts' JSON files are merged
(the no_pdl part renamed), the goals table and the benchmark table are written, the results are copied to
$OUT, and failures are reported as failures (a benchmark that failed its verification, a test binary that
ran no test, a failing sanitizer, a verification self-test that missed a perturbed output), while a baseline that cannot run on the machine does not fail its part.
The script and what it reads are copied into a scratch folder, so nothing is written into the checkout.
Run by ctest (tests/CMakeLists.txt) when Python 3 and bash are found."""
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []


def expect(cond, what):
    if not cond:
        failures.append(what)


def write_exe(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


NVIDIA_SMI = """#!/bin/sh
[ -n "$FAKE_NO_GPU" ] && exit 9
case "$*" in
  *-L*) echo "GPU 0: NVIDIA Stand-in GPU (UUID: GPU-0)" ;;
  *--query-gpu=name*) echo "NVIDIA Stand-in GPU" ;;
  *--query-gpu=driver_version*) echo "999.99" ;;
  *-q*) echo "Clocks: stand-in" ;;
  *) echo "| NVIDIA-SMI 999.99   Driver Version: 999.99   CUDA Version: 13.0 |" ;;
esac
"""

# compute-sanitizer: --help names the option the script looks for; otherwise runs the program after the
# flags (the first argument that is a path to an executable file) with its own arguments.
SANITIZER = """#!/bin/sh
if [ "$1" = "--help" ]; then echo "  --report-api-errors arg"; exit 0; fi
echo "compute-sanitizer $*" >> "$FAKE_CALLS"
code=0
while [ $# -gt 0 ] && [ ! -x "$1" ]; do
  [ "$1" = "--error-exitcode" ] && code="$2"
  shift
done
# As the real tool: errors found change the exit status only through --error-exitcode.
[ -n "$FAKE_SANITIZER_FAIL" ] && { echo "========= ERROR SUMMARY: 1 error"; exit "$code"; }
"$@"; rc=$?
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
"""

TESTS = """#!/bin/sh
echo "tests $*" >> "$FAKE_CALLS"
i=0  # a hang, in 1-second sleeps (the shell takes a TERM only between them)
while [ "$i" -lt "${FAKE_TESTS_SLEEP:-0}" ]; do sleep 1; i=$((i + 1)); done
if [ -n "$FAKE_TESTS_NO_GPU" ]; then echo "[culayers] no CUDA GPU visible (stand-in)"; exit 0; fi
echo "[==========] Running 3 tests from 1 test suite. $*"
if [ -n "$FAKE_TESTS_NONE" ]; then echo "[  PASSED  ] 0 tests."; exit 0; fi
echo "[  PASSED  ] 3 tests."
"""

# culayers_bench: writes Google Benchmark's JSON for the sample cases its --benchmark_filter selects
# (names as the real binary registers them), with median and cv aggregates. FAKE_BENCH_ERROR=<regex>
# makes the matching cases fail verification; FAKE_BENCH_UNAVAILABLE=<regex> makes them "baseline
# unavailable".
BENCH = """#!/usr/bin/env python3
import json, os, re, sys
names = [
    "masked_reduce/s4_mean_bf16_B128_T512_F768/ours_lengths/iterations:200/manual_time",
    "masked_reduce/s6_moments_f32_B2_T65536_F256/ours_lengths/iterations:200/manual_time",
    "masked_reduce/s6_moments_f32_B2_T65536_F256/copy_same_bytes/iterations:200/manual_time",
    "dropout_fwd/ours/8192x4096/keep0.9/iterations:200/manual_time",
    "dropout_fwd/cudnn/8192x4096/keep0.9/iterations:200/manual_time",
    "group_norm/s3_N16_C256_56x56/bf16/nchw/none/fwd/ours/iterations:200/manual_time",
    "group_norm/s3_N16_C256_56x56/bf16/nchw/none/fwd/cudnn/iterations:200/manual_time",
    "group_norm/s3_N16_C256_56x56/bf16/nhwc/none/bwd/ours/iterations:200/manual_time",
    "group_norm/s2_C128_1024x1024/bf16/nchw/silu/fwd/ours/iterations:20/manual_time",
    "group_norm/s1_C320_64x64/bf16/nhwc/silu/fwd/ours/iterations:200/manual_time",
    "BM_copy_kernel/bytes:67108864/iterations:200/manual_time",
    "batch_norm/resnet/bf16/nchw/training/ours/iterations:200/manual_time",
    "cast/8192x4096/f32_to_bf16/ours/iterations:200/manual_time",
]
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write("bench NO_PDL=%s %s\\n" % (os.environ.get("CULAYERS_NO_PDL", ""), " ".join(sys.argv[1:])))
if "culayers_perturb" in args:  # the verification self-test: every case errors with its verdict; a tally
    missed = bool(os.environ.get("FAKE_SELFTEST_MISS"))
    setup_error = os.environ.get("FAKE_SELFTEST_SETUP_ERROR")
    out = []
    for n in names:
        if re.search(args.get("benchmark_filter", "."), n):
            msg = "self-test: caught (output 0, element 1 of 9: 1 -> 2049): stand-in"
            if setup_error and re.search(setup_error, n):
                msg = "setup: cudaMalloc failed (stand-in)"
            out.append({"name": n, "run_name": n, "run_type": "iteration", "error_occurred": True,
                        "error_message": msg})
    if args.get("benchmark_out"):
        json.dump({"context": {}, "benchmarks": out}, open(args["benchmark_out"], "w"))
    print("self-test of the verifications (output %s perturbed):" % args["culayers_perturb"])
    print("self-test: %s" % ("FAILED" if missed else "passed"))
    sys.exit(1 if missed else 0)
chosen = [n for n in names if re.search(args.get("benchmark_filter", "."), n)]
if os.environ.get("FAKE_BENCH_EMPTY") and re.search(os.environ["FAKE_BENCH_EMPTY"], args.get("benchmark_filter", "")):
    chosen = []
out = []
for n in chosen:
    run = n
    for pat, msg in ((os.environ.get("FAKE_BENCH_ERROR"), "verification failed: stand-in"),
                     (os.environ.get("FAKE_BENCH_UNAVAILABLE"), "baseline unavailable: stand-in")):
        if pat and re.search(pat, n):
            out.append({"name": n, "run_name": run, "run_type": "iteration", "error_occurred": True,
                        "error_message": msg})
            break
    else:
        for agg, t in (("mean", 10.0), ("median", 10.0), ("stddev", 0.1), ("cv", 0.01)):
            out.append({"name": n + "_" + agg, "run_name": run, "run_type": "aggregate", "aggregate_name": agg,
                        "real_time": t, "time_unit": "us", "pct_of_copy": 95.0, "bytes": 1000, "GB/s": 100.0})
    print(n)
path = args.get("benchmark_out")
if path:
    json.dump({"context": {"culayers_card": "stand-in"}, "benchmarks": out}, open(path, "w"))
"""

OK_EXE = "#!/bin/sh\necho \"$0: ok\"\n"


def make_tree(base):
    """A scratch checkout: the check script, what it sources and runs, and stand-in binaries."""
    for rel in ("scripts/gpu_check.sh", "scripts/gpu_common.sh", "bench/goals.py"):
        os.makedirs(os.path.join(base, os.path.dirname(rel)), exist_ok=True)
        shutil.copy(os.path.join(ROOT, rel), os.path.join(base, rel))
    fake = os.path.join(base, "fakebin")
    write_exe(os.path.join(fake, "nvidia-smi"), NVIDIA_SMI)
    # The stand-in bench and the script's helpers run "python3": this interpreter, whatever PATH holds.
    write_exe(os.path.join(fake, "python3"), f"#!/bin/sh\nexec '{sys.executable}' \"$@\"\n")
    write_exe(os.path.join(fake, "compute-sanitizer"), SANITIZER)
    build = os.path.join(base, "build", "gpu")
    write_exe(os.path.join(build, "tests", "culayers_tests_cuda"), TESTS)
    write_exe(os.path.join(build, "bench", "culayers_bench"), BENCH)
    write_exe(os.path.join(build, "examples", "demo", "culayers_demo"), OK_EXE)
    write_exe(os.path.join(build, "examples", "engine", "culayers_engine_example_cuda"), OK_EXE)
    with open(os.path.join(build, "culayers_build_info.txt"), "w") as f:
        f.write("commit 0123456\ndirty no\n")
    return fake


def run_check(base, fake, extra_env, args=()):
    """Runs the check; returns (exit status, console output, $OUT, the stand-ins' calls)."""
    out = os.path.join(base, "out")
    shutil.rmtree(out, ignore_errors=True)
    calls = os.path.join(base, "calls.txt")
    open(calls, "w").close()
    tmp = os.path.join(base, "tmp")  # the script's own scratch folder (mktemp) goes here too
    os.makedirs(tmp, exist_ok=True)
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("CULAYERS_") or k.startswith("FAKE_"):
            del env[k]
    env.update({"PATH": fake + os.pathsep + env.get("PATH", ""), "OUT": out, "CULAYERS_GPU_DEADLINE": "300",
                "CULAYERS_STEP_TIMEOUT": "60", "FAKE_CALLS": calls, "TMPDIR": tmp})
    env.update(extra_env)
    p = subprocess.run(["bash", os.path.join(base, "scripts", "gpu_check.sh"), *args], env=env,
                       capture_output=True, text=True, timeout=90)
    with open(calls) as f:
        return p.returncode, p.stdout + p.stderr, out, f.read().splitlines()


def report_of(out):
    mds = [f for f in os.listdir(out) if f.endswith(".md")] if os.path.isdir(out) else []
    if len(mds) != 1:
        return ""
    with open(os.path.join(out, mds[0])) as f:
        return f.read()


def step_row(report, step):
    for line in report.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] == step:
            return cells[2]
    return None


def main():
    base = tempfile.mkdtemp(prefix="culayers_gpu_check_test_")
    try:
        fake = make_tree(base)
        parts = ["masked_reduce", "dropout", "group_norm_s3", "group_norm_s2", "group_norm_s1", "roofline",
                 "batch_norm", "cast", "no_pdl"]

        # 1. Everything passes.
        rc, log, out, calls = run_check(base, fake, {})
        report = report_of(out)
        expect(rc == 0, f"all-pass run: exit {rc}\n{log[-3000:]}")
        expect(report != "", "all-pass run: no report in $OUT")
        for step in ["tests"] + ["bench/" + p for p in parts] + [
                "culayers_demo", "culayers_engine_example_cuda", "selftest/output0", "selftest/output1",
                "selftest/output2", "memcheck", "racecheck", "synccheck"]:
            expect(step_row(report, step) == "PASS", f"all-pass run: step {step}: {step_row(report, step)}")
        expect("NVIDIA Stand-in GPU" in report and "0123456" in report, "report names the card and the commit")
        expect("## Goals (bench/goals.py)" in report and "| masked reductions |" in report,
               "report has the goals table")
        jsons = [f for f in os.listdir(out) if f.endswith(".json")] if os.path.isdir(out) else []
        expect(len(jsons) == 1, f"one merged JSON in $OUT: {jsons}")
        if jsons:
            with open(os.path.join(out, jsons[0])) as f:
                merged = json.load(f)
            runs = {b.get("run_name") for b in merged.get("benchmarks", [])}
            expect("masked_reduce/s6_moments_f32_B2_T65536_F256/ours_lengths_no_pdl/iterations:200/manual_time"
                   in runs, "no_pdl part renamed in the merged JSON")
            expect("group_norm/s3_N16_C256_56x56/bf16/nchw/none/fwd/ours_no_pdl/iterations:200/manual_time" in runs,
                   "group-norm no_pdl case renamed")
            expect("BM_copy_kernel/bytes:67108864/iterations:200/manual_time" in runs, "roofline part merged")
            expect(not any("cudnn_no_pdl" in r for r in runs), "only ours cases run again without PDL")
        expect(os.path.isfile(os.path.join(out, "gpu_check_logs.tar.gz")), "log archive in $OUT")
        if os.path.isfile(os.path.join(out, "gpu_check_logs.tar.gz")):
            with tarfile.open(os.path.join(out, "gpu_check_logs.tar.gz")) as t:
                members = t.getnames()
            expect(any(m.endswith("bench-no_pdl.json") for m in members) and any(m.endswith("tests.log")
                                                                                  for m in members),
                   f"archive holds the part JSONs and logs: {members}")
        expect(not [f for f in os.listdir(os.path.join(ROOT, "bench", "results")) if "stand-in" in f],
               "nothing written into the checkout")
        # What the stand-ins were run with.
        sanitizer = [c for c in calls if c.startswith("compute-sanitizer ")]
        expect(len(sanitizer) == 3, f"three sanitizer runs: {sanitizer}")
        for tool, flt, extra in (("memcheck", "*Tsan*:CommonLaunch.*:NhwcSums*", "--leak-check full"),
                                 ("racecheck", "*Tsan*", ""), ("synccheck", "*Tsan*", "")):
            run = [c for c in sanitizer if f"--tool {tool} " in c]
            expect(len(run) == 1 and "--error-exitcode 1" in run[0] and f"--gtest_filter={flt}" in run[0]
                   and extra in run[0] and "--report-api-errors no" in run[0], f"{tool} run: {run}")
        bench = [c for c in calls if c.startswith("bench ") and "--culayers_perturb" not in c]
        expect(len(bench) == len(parts), f"one culayers_bench run per part: {bench}")
        selftest = [c for c in calls if c.startswith("bench ") and "--culayers_perturb" in c]
        expect([c.split("--culayers_perturb=")[1].split()[0] for c in selftest] == ["0", "1", "2"]
               and all("--benchmark_filter=^" in c and "selftest-output" in c for c in selftest),
               f"the self-test runs outputs 0, 1 and 2, each with a filter and its own JSON: {selftest}")
        if jsons:
            expect(not any("self-test" in str(b.get("error_message", "")) for b in merged.get("benchmarks", [])),
                   "the self-test's cases stay out of the merged benchmark JSON")
        expect(all(("NO_PDL=1 " in c) == ("ours_(lengths|mask)" in c) for c in bench),
               f"CULAYERS_NO_PDL=1 in the no_pdl part only: {bench}")
        expect(all("--benchmark_out_format=json" in c for c in bench), "every part writes JSON")

        # 2. A verification failure fails its part (and the run); an unavailable baseline does not. The run
        # after the first of the day takes the next free name: run 1's files stay as they were.
        results = os.path.join(base, "bench", "results")
        first = sorted(f for f in os.listdir(results) if f.endswith(".md") or f.endswith(".json"))
        first_bytes = {}
        for name in first:
            with open(os.path.join(results, name), "rb") as f:
                first_bytes[name] = f.read()
        day = subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
        rc, log, out, calls = run_check(base, fake, {"FAKE_BENCH_ERROR": "^dropout_fwd/ours",
                                              "FAKE_BENCH_UNAVAILABLE": "group_norm/s3_.*/cudnn"},
                                 ["bench"])
        report = report_of(out)
        mds = sorted(f for f in os.listdir(out) if f.endswith(".md")) if os.path.isdir(out) else []
        stems = sorted({f.rsplit(".", 1)[0] for f in first})
        same_day = day == subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
        expect(len(first) == 2 and len(stems) == 1 and (mds == [stems[0] + "-run2.md"] or not same_day),
               f"the day's second run is named -run2: first {first}, then {mds}")
        for name, data in first_bytes.items():
            with open(os.path.join(results, name), "rb") as f:
                expect(f.read() == data, f"the first run's {name} is left as it was")
        expect(rc == 1, f"verification failure: exit {rc}")
        expect((step_row(report, "bench/dropout") or "").startswith("FAIL (benchmarks that failed verification"),
               f"dropout part: {step_row(report, 'bench/dropout')}")
        expect(step_row(report, "bench/group_norm_s3") == "PASS (baseline cases that cannot run here: 1; see the table)",
               f"unavailable baseline: {step_row(report, 'bench/group_norm_s3')}")
        expect(step_row(report, "bench/masked_reduce") == "PASS", "other parts still pass")
        expect(step_row(report, "tests") is None, "only the steps asked for run")

        # 3. A test binary that ran no test fails; so does a sanitizer that reports an error.
        rc, log, out, calls = run_check(base, fake, {"FAKE_TESTS_NONE": "1"}, ["tests"])
        expect(rc == 1 and (step_row(report_of(out), "tests") or "").startswith("FAIL (no test ran"),
               f"no test ran: exit {rc}, {step_row(report_of(out), 'tests')}")
        rc, log, out, calls = run_check(base, fake, {"FAKE_SANITIZER_FAIL": "1"}, ["racecheck"])
        expect(rc == 1 and step_row(report_of(out), "racecheck") == "FAIL (exit 1)",
               f"sanitizer error: exit {rc}, {step_row(report_of(out), 'racecheck')}")

        # 3a. A self-test run in which a perturbed output passed its verification fails.
        rc, log, out, calls = run_check(base, fake, {"FAKE_SELFTEST_MISS": "1"}, ["selftest"])
        report = report_of(out)
        expect(rc == 1 and step_row(report, "selftest/output0") == "FAIL (exit 1)"
               and step_row(report, "selftest/output2") == "FAIL (exit 1)",
               f"self-test miss: exit {rc}, {step_row(report, 'selftest/output0')}")
        expect("self-test: FAILED" in report, "the self-test's tally is in the report")
        # A case that errored before its verification (set-up) fails the run although the binary exited 0.
        rc, log, out, calls = run_check(base, fake, {"FAKE_SELFTEST_SETUP_ERROR": "^group_norm/"}, ["selftest"])
        report = report_of(out)
        expect(rc == 1 and (step_row(report, "selftest/output0") or "").startswith(
            "FAIL (cases that errored before their verification: "),
               f"self-test set-up error: exit {rc}, {step_row(report, 'selftest/output0')}")

        # 3b. A binary that saw no GPU fails although it exited 0; a part whose filter selects nothing fails.
        rc, log, out, calls = run_check(base, fake, {"FAKE_TESTS_NO_GPU": "1"}, ["tests"])
        expect(rc == 1 and step_row(report_of(out), "tests") == "FAIL (the binary saw no usable GPU)",
               f"no GPU seen: exit {rc}, {step_row(report_of(out), 'tests')}")
        rc, log, out, calls = run_check(base, fake, {"FAKE_BENCH_EMPTY": "BM_"}, ["bench"])
        expect(rc == 1 and step_row(report_of(out), "bench/roofline") == "FAIL (the filter matched no benchmark)",
               f"empty part: exit {rc}, {step_row(report_of(out), 'bench/roofline')}")

        # 3c. A step is cut at the step timeout; steps that would start too close to the deadline are NOT RUN.
        # (Deadline 40 s: the tests step starts with 30 s left less start-up time, at most 12 s of it used, so
        # a slow start on a loaded machine has 8 s of slack; after the 12 s step fewer than 20 s are left.)
        rc, log, out, calls = run_check(base, fake, {"FAKE_TESTS_SLEEP": "30", "CULAYERS_STEP_TIMEOUT": "12",
                                                     "CULAYERS_GPU_DEADLINE": "40"}, ["tests", "bench"])
        report = report_of(out)
        expect(rc == 1 and step_row(report, "tests") == "TIMEOUT after 12s",
               f"step timeout: exit {rc}, {step_row(report, 'tests')}")
        expect((step_row(report, "bench/masked_reduce") or "").startswith("NOT RUN: the 40 s deadline was reached")
               and (step_row(report, "bench/no_pdl") or "").startswith("NOT RUN"),
               f"deadline: {step_row(report, 'bench/masked_reduce')}")
        expect(not any(c.startswith("bench ") for c in calls), "no part started after the deadline")

        # 4. One benchmark part by name; an unknown part or step is refused before anything runs.
        rc, log, out, calls = run_check(base, fake, {"CULAYERS_BENCH_PARTS": "roofline"}, ["bench"])
        report = report_of(out)
        expect(rc == 0 and step_row(report, "bench/roofline") == "PASS" and step_row(report, "bench/dropout") is None,
               f"CULAYERS_BENCH_PARTS=roofline: exit {rc}")
        rc, log, out, calls = run_check(base, fake, {"CULAYERS_BENCH_PARTS": "nonesuch"}, ["bench"])
        expect(rc == 2 and "unknown part" in log, f"unknown part: exit {rc}")
        rc, log, out, calls = run_check(base, fake, {}, ["benchmarks"])
        expect(rc == 2 and "unknown step" in log, f"unknown step: exit {rc}")

        # 5. No GPU: says so and exits 0 without a report.
        rc, log, out, calls = run_check(base, fake, {"FAKE_NO_GPU": "1"})
        expect(rc == 0 and "no CUDA GPU visible" in log and report_of(out) == "", f"no GPU: exit {rc}")
    finally:
        shutil.rmtree(base, ignore_errors=True)

    if failures:
        print("gpu_check_test: FAILED")
        for f in failures:
            print("  " + f)
        return 1
    print("gpu_check_test: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
