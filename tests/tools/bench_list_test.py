#!/usr/bin/env python3
"""Checks the benchmark case names against what reads them: every case bench/goals.py reads is registered
in culayers_bench, group norm's configurations per shape are as docs/performance.md lists them, and the
GPU scripts' filters select cases (gpu_check.sh's parts and verification self-test, gpu_profile.sh's default
cases). Lists the cases
(--benchmark_list_tests, which needs no GPU), gives goals.py one made-up result per listed case and fails
when a goal row reports a case missing or nothing measured (a renamed or dropped case would otherwise
surface only as "not measured" after a GPU run). Usage: bench_list_test.py <culayers_bench>. Run by ctest
(bench/CMakeLists.txt) when the benchmark binary and a Python 3 interpreter exist."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import goals  # noqa: E402


def main(argv):
    if len(argv) != 2:
        print("usage: bench_list_test.py <culayers_bench>", file=sys.stderr)
        return 2
    listed = subprocess.run([argv[1], "--benchmark_list_tests"], capture_output=True, text=True, timeout=120)
    names = [goals.case_name(line.strip()) for line in listed.stdout.splitlines() if line.strip()]
    failures = []
    if listed.returncode != 0 or not names:
        failures.append(f"listing failed (exit {listed.returncode}): {listed.stderr.strip()}")
    if len(set(names)) != len(names):
        dups = sorted({n for n in names if names.count(n) > 1})
        failures.append("cases registered twice: " + ", ".join(dups))
    # Group norm's rows are built from the configurations present, so a dropped configuration would only
    # shrink a row: the counts per shape (docs/performance.md's table: shape 1, six sizes in four (dtype,
    # layout, activation) combinations, forward and backward; shape 2, the VAE shapes; shape 3, the
    # training shape) are pinned here. Change them with the table.
    configs = {}
    for n in names:
        m = goals.GN.match(n)
        if m:
            configs.setdefault(m.group(1), set()).add(m.groups()[:6])
    counts = {shape: len(v) for shape, v in configs.items()}
    if counts != {"s1": 48, "s2": 6, "s3": 8}:
        failures.append(f"group-norm configurations per shape: {counts}, expected s1 48, s2 6, s3 8")
    # The GPU scripts' filters against the names, through the binary's own filter (its regex engine, and
    # its whole-name matching: /iterations:N/manual_time included): every benchmark part of
    # scripts/gpu_check.sh selects some case, and every default case of scripts/gpu_profile.sh exactly one.
    # The arrays are read by bash itself from the scripts.
    def bash_array(script, start, stop, name):
        cmd = ('eval "$(sed -n \'/' + start + '/,/' + stop + '/p\' "$1")"; printf \'%s\\n\' "${' + name + '[@]}"')
        r = subprocess.run(["bash", "-c", cmd, "_", os.path.join(ROOT, "scripts", script)], capture_output=True,
                           text=True, timeout=60)
        return r.stdout.splitlines() if r.returncode == 0 else []

    def selected(regex):
        r = subprocess.run([argv[1], "--benchmark_list_tests", "--benchmark_filter=" + regex], capture_output=True,
                           text=True, timeout=120)
        text = r.stdout + r.stderr
        if r.returncode != 0 or "Could not compile" in text or "Failed to match" in text:
            return []
        return [line for line in r.stdout.splitlines() if line.strip()]

    flat = bash_array("gpu_check.sh", "^bench_parts=($", "^)$", "bench_parts")
    parts = list(zip(flat[0::2], flat[1::2]))
    if len(parts) < 8 or len(flat) % 2:
        failures.append(f"read {len(flat)} words of bench_parts from scripts/gpu_check.sh, expected 8 pairs")
    for part, regex in parts:
        if not selected(regex):
            failures.append(f"gpu_check.sh part {part}: filter {regex} selects no case")
    # The verification self-test (gpu_check.sh's selftest_runs: output number, filter): output 0's filter
    # reaches every kind of verification the binary registers (a variant of an op, e.g. group norm's
    # nhwc_sums or the dropout graph replay; the copies and the roofline check windows and are left out),
    # and every filter selects some case, no copy or roofline case, and only cases that have its output.
    def kind(name):
        parts = name.split("/")
        if parts[0] in ("dropout_fwd", "dropout_bwd", "dropout_graph"):
            return parts[0] + "/" + parts[1]
        if parts[0] in ("group_norm", "masked_reduce", "batch_norm", "cast"):
            return parts[0] + "/" + parts[-1]
        return None

    def outputs_of(name):  # the outputs each verification hands to the self-test (bench/*: perturb_output)
        parts = name.split("/")
        if parts[0] == "group_norm":
            if parts[-1] == "cudnn":
                return 3 if parts[-2] == "bwd" else 1
            return 1 if parts[-1] == "nhwc_sums" else 3
        if parts[0] == "masked_reduce":
            return 2 if "_moments_" in parts[1] else 1
        if parts[0] == "dropout_graph":
            return 3  # three replays
        if parts[0] in ("dropout_fwd", "dropout_bwd"):
            return 2 if parts[1] == "cudnn" or parts[0] == "dropout_bwd" else 1
        if parts[0] == "batch_norm":
            return (3 if parts[-1] == "ours" else 2) if parts[-2].startswith("train") else 1
        if parts[0] == "cast":
            return 1
        return 0

    def not_checked_whole(name):
        return name.startswith("BM_") or name.startswith("dropout_copy/") or name.endswith("/copy_same_bytes")

    flat = bash_array("gpu_check.sh", "^selftest_runs=($", "^)$", "selftest_runs")
    runs = list(zip(flat[0::2], flat[1::2]))
    if [k for k, _ in runs] != ["0", "1", "2"] or len(flat) % 2:
        failures.append(f"read {len(flat)} words of selftest_runs from scripts/gpu_check.sh, expected outputs "
                        "0, 1 and 2")
    for k, regex in runs:
        hits = [goals.case_name(h.strip()) for h in selected(regex)]
        if not hits:
            failures.append(f"gpu_check.sh self-test of output {k}: filter {regex} selects no case")
        short = [h for h in hits if not not_checked_whole(h) and outputs_of(h) <= int(k)]
        if short:
            failures.append(f"gpu_check.sh self-test of output {k} selects cases without an output {k}: "
                            + ", ".join(short))
        if any(not_checked_whole(h) for h in hits):
            failures.append(f"gpu_check.sh self-test of output {k} selects copies or roofline cases: "
                            + ", ".join(h for h in hits if not_checked_whole(h)))
        if k == "0":
            missing = {kind(n) for n in names if not not_checked_whole(n)} - {kind(h) for h in hits}
            if missing:
                failures.append("gpu_check.sh self-test of output 0 reaches no case of: " + ", ".join(sorted(
                    str(m) for m in missing)))
    profile_cases = bash_array("gpu_profile.sh", "^  cases=($", "^  )$", "cases")
    if not profile_cases:
        failures.append("read no default case from scripts/gpu_profile.sh")
    for regex in profile_cases:
        hits = selected(regex)
        if len(hits) != 1:
            failures.append(f"gpu_profile.sh case {regex} selects {len(hits)} cases, expected 1")
    # Made-up results: every case measured, with the fields goals.py reads.
    cases = {n: {"us": 1.0, "pct": 100.0, "bytes": 1000, "label": ""} for n in names}
    goals.rows.clear()
    goals.errored.clear()
    goals.masked_goals(cases)
    goals.dropout_goals(cases)
    goals.group_norm_goals(cases)
    if len(goals.rows) < 12:
        failures.append(f"goals.py wrote {len(goals.rows)} rows, expected at least 12")
    for family, goal, numbers, met in goals.rows:
        if met.startswith("not measured") or met.startswith("incomplete") or "missing" in numbers:
            failures.append(f"{family}: {goal}: {met}: {numbers[:300]}")
    if failures:
        print("bench_list_test: FAILED")
        for f in failures:
            print("  " + f)
        return 1
    print(f"bench_list_test: {len(names)} cases listed; every goal row finds its cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
