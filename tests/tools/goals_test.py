#!/usr/bin/env python3
"""Checks bench/goals.py against the committed run-2 results, whose readings docs/performance.md section 10
quotes: the numbers it extracts, the met / not met verdicts, and what it says about missing benchmarks and
unreadable files. Run by ctest (tests/CMakeLists.txt) when a Python 3 interpreter is found."""
import io
import json
import os
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import goals  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
RUN2 = [os.path.join(RESULTS, f) for f in ("nvidia-h100-80gb-hbm3-2026-11-26-run2.json",
                                           "nvidia-h100-80gb-hbm3-2026-11-26-run2-dropout.json")]
failures = []


def run(paths):
    goals.rows.clear()
    goals.errored.clear()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = goals.main(["goals.py"] + paths)
    return rc, out.getvalue(), err.getvalue()


def row(text, goal_start):
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[2].startswith(goal_start):
            return cells
    failures.append(f"no row for goal '{goal_start}'")
    return ["", "", "", "", ""]


def expect(cond, what):
    if not cond:
        failures.append(what)


# The names goals.py derives from Google Benchmark's run names.
expect(goals.case_name("group_norm/s3_N16_C256_56x56/bf16/nchw/none/fwd/ours/iterations:200/manual_time") ==
       "group_norm/s3_N16_C256_56x56/bf16/nchw/none/fwd/ours", "case_name strips iterations and manual_time")
expect(goals.case_name("dropout_fwd/ours/8192x4096/keep0.9/manual_time") == "dropout_fwd/ours/8192x4096/keep0.9",
       "case_name strips manual_time")

rc, out, err = run(RUN2)
expect(rc == 0, f"exit status {rc} on the run-2 files: {err}")
cells = row(out, "≥ 90 % of copy, bf16, sentence embedding")
expect("s4_mean_bf16_B128_T512_F768/ours_lengths: 86.1 % (28.5 µs) ✗" in cells[3] and "81.8 %" in cells[3] and
       "55.9 %" in cells[3] and "47.8 %" in cells[3], "sentence-embedding percentages: " + cells[3])
expect(cells[4] == "**no**", "sentence-embedding goal not met in run 2")
cells = row(out, "≥ 90 % of copy, bf16, long context")
expect(cells[4] == "yes" and "ours_lengths: 96.6 % (374.1 µs);" in cells[3] and "✗" not in cells[3],
       "long-context goal met at 96.6 %: " + cells[3])
cells = row(out, "few-output moments")
# ours_lengths moves 131064 bytes fewer than the copy case (lengths instead of the mask): 1.196× of the copy's
# time, 1.197× of the copy's time for its own bytes.
expect("1.197×" in cells[3] and "1.208×" in cells[3] and cells[4] == "**no**", "few-output ratios: " + cells[3])
# Both within 2 % of the 1.2× threshold, one on each side: marked as within the run-to-run noise.
expect(cells[3].count("(within ±2 % noise)") == 2, "few-output noise marks: " + cells[3])
expect(goals.noise_mark(91.0, 90.0) != "" and goals.noise_mark(88.0, 90.0) == "" and goals.noise_mark(3.1, 3.0) == "",
       "noise_mark's 2 % band")
cells = row(out, "≥ 3× the unfused CUB baseline")
expect("11.7×" in cells[3] and cells[4] == "yes", "CUB ratio: " + cells[3])
cells = row(out, "(not an issue target) ≥ 3× the framework-shaped")
expect(cells[3] == "unfused_framework: missing" and cells[4] == "not measured",
       "run 2 has no framework-shaped baseline: " + cells[3])
# With one (a made-up time: 3.3× ours_lengths' 28.5 µs, 3.1× ours_mask's 30.2 µs), both ratios are read from it.
with_framework = goals.load(RUN2)
with_framework["masked_reduce/s4_mean_bf16_B128_T512_F768/unfused_framework"] = {"us": 94.05, "pct": None,
                                                                                "bytes": None, "label": ""}
goals.rows.clear()
goals.masked_goals(with_framework)
framework = [r for r in goals.rows if "framework-shaped" in r[1]]
expect(len(framework) == 1 and "ours_lengths: 3.3×" in framework[0][2] and "ours_mask: 3.1×" in framework[0][2]
       and framework[0][3] == "yes", f"framework ratios: {framework}")
cells = row(out, "≥ 92 % of copy, forward and backward")
expect(cells[4] == "yes" and "fwd/ours/8192x4096/keep0.5: 97.5 %" in cells[3], "dropout percentages: " + cells[3])
cells = row(out, "faster than cuDNN")
expect(cells[4] == "not measured", "run 2 has no cuDNN dropout case: " + cells[3])
cells = row(out, "broadcast noise within 1.1×")
expect("fwd noise32x1x1024: 1.102×" in cells[3] and cells[4] == "**no**", "broadcast ratio: " + cells[3])
cells = row(out, "training shape (N16 C256 56², G32) ≥ 85 %")
expect("bf16/nchw/none/fwd: 98.9 %" in cells[3] and cells[4] == "**no**", "shape 3 forward: " + cells[3])
cells = row(out, "VAE shapes")
expect("C128_1024x1024/bf16/nchw/silu/fwd: 48.8 % ✗" in cells[3], "VAE: " + cells[3])
cells = row(out, "UNet shapes")
expect(cells[3].startswith("36 of 48 cases beat both"), "UNet count: " + cells[3])
expect("C320_128x128/bf16/nchw/none/fwd: 59.2 against naive 166.5, cuDNN 50.0 µs ✗" in cells[3],
       "UNet miss listed: " + cells[3])
cells = row(out, "(not an issue target) channels-last forward")
expect(cells[4] == "not measured" and cells[3] == "no nhwc_sums case in these results", "run 2 has no NHWC peer")

# Run 1 alone has cuDNN dropout and the batch-norm part; its UNet count is 34.
rc, out, err = run([os.path.join(RESULTS, "nvidia-h100-80gb-hbm3-2026-11-26-run1.json")])
cells = row(out, "faster than cuDNN")
expect(cells[4] == "yes", "run 1: dropout faster than cuDNN: " + cells[3])
expect(row(out, "UNet shapes")[3].startswith("34 of 48"), "run 1 UNet count")

# A file with one benchmark: every other goal says "missing" / "not measured", nothing is invented.
with tempfile.TemporaryDirectory() as tmp:
    one = os.path.join(tmp, "one.json")
    with open(one, "w") as f:
        json.dump({"benchmarks": [{"run_name": "masked_reduce/s5_mean_bf16_B16_T8192_F4096/ours_lengths/manual_time",
                                   "aggregate_name": "median", "run_type": "aggregate", "real_time": 400.0,
                                   "time_unit": "us", "pct_of_copy": 88.0}]}, f)
    rc, out, err = run([one])
    cells = row(out, "≥ 90 % of copy, bf16, long context")
    expect(cells[4] == "**no**" and "ours_lengths: 88.0 %" in cells[3] and "ours_mask: missing" in cells[3],
           "one-case file: " + cells[3])
    expect(row(out, "UNet shapes")[4] == "not measured", "UNet without data")
    # A goal whose measured cases pass while another case is missing (or failed its check) is not met.
    met_one = os.path.join(tmp, "met_one.json")
    with open(met_one, "w") as f:
        json.dump({"benchmarks": [{"run_name": "masked_reduce/s5_mean_bf16_B16_T8192_F4096/ours_lengths/manual_time",
                                   "aggregate_name": "median", "run_type": "aggregate", "real_time": 370.0,
                                   "time_unit": "us", "pct_of_copy": 97.0},
                                  {"run_name": "masked_reduce/s5_mean_bf16_B16_T8192_F4096/ours_mask/manual_time",
                                   "aggregate_name": "median", "run_type": "aggregate", "error_occurred": True,
                                   "error_message": "verification failed"}]}, f)
    rc, out, err = run([met_one])
    cells = row(out, "≥ 90 % of copy, bf16, long context")
    expect(cells[4].startswith("incomplete") and "ours_mask: missing" in cells[3],
           "one case met, one failed its check: " + cells[4] + " / " + cells[3])
    # The same for a group-norm row built from the configurations present: an errored ours is missing.
    gn_err = os.path.join(tmp, "gn_err.json")
    s3 = "group_norm/s3_N16_C256_56x56/{}/{}/none/fwd/ours/iterations:200/manual_time"
    with open(gn_err, "w") as f:
        json.dump({"benchmarks": [
            {"run_name": s3.format("fp32", "nchw"), "aggregate_name": "median", "run_type": "aggregate",
             "real_time": 45.0, "time_unit": "us", "pct_of_copy": 93.0},
            {"run_name": s3.format("bf16", "nhwc"), "run_type": "iteration", "error_occurred": True,
             "error_message": "verification failed"},
            {"run_name": s3.format("bf16", "nhwc").replace("/ours/", "/nhwc_sums/"), "run_type": "iteration",
             "error_occurred": True, "error_message": "verification failed"}]}, f)
    rc, out, err = run([gn_err])
    cells = row(out, "training shape (N16 C256 56², G32) ≥ 85 %")
    expect(cells[4].startswith("incomplete") and "bf16/nhwc/none/fwd: missing" in cells[3],
           "group-norm row with an errored case: " + cells[4] + " / " + cells[3])
    cells = row(out, "(not an issue target) channels-last forward")
    expect(cells[3] == "no nhwc_sums case measured (errored, or ours missing)" and cells[4] == "not measured",
           "errored NHWC peer: " + " / ".join(cells))
    # Same-process variants: listed next to their ours case, with the ratio variant / ours.
    ab = os.path.join(tmp, "ab.json")
    gn = "group_norm/s1_C320_64x64/bf16/nhwc/none/fwd/"
    s6 = "masked_reduce/s6_moments_f32_B2_T65536_F256/"
    with open(ab, "w") as f:
        json.dump({"benchmarks": [
            {"run_name": gn + v + "/iterations:200/manual_time", "aggregate_name": "median", "real_time": t,
             "time_unit": "us", "label": "path tile"}
            for v, t in (("ours", 10.0), ("ours_no_tile", 15.0), ("ours_no_pdl", 12.0), ("ours_no_balance", 11.0),
                         ("nhwc_sums", 14.0))] + [
            {"run_name": s6 + v + "/manual_time", "aggregate_name": "median", "real_time": t, "time_unit": "us"}
            for v, t in (("ours_lengths", 60.0), ("ours_lengths_no_pdl", 63.0))]}, f)
    rc, out, err = run([ab])
    expect("| s1_C320_64x64/bf16/nhwc/none/fwd/ours | no_tile | 10.0 | 15.0 | 1.50 | path tile |" in out,
           "no_tile row: " + out)
    expect("| s1_C320_64x64/bf16/nhwc/none/fwd/ours | no_pdl | 10.0 | 12.0 | 1.20 | path tile |" in out,
           "no_pdl row")
    expect("| s1_C320_64x64/bf16/nhwc/none/fwd/ours | no_balance | 10.0 | 11.0 | 1.10 | path tile |" in out,
           "no_balance row")
    expect("| s6_moments_f32_B2_T65536_F256/ours_lengths | no_pdl | 60.0 | 63.0 | 1.05 |" in out, "masked no_pdl row")
    cells = row(out, "(not an issue target) channels-last forward")
    expect(cells[4] == "yes" and cells[3] == "1 of 1 cases faster; s1 C320_64x64/bf16/nhwc/none: 10.0 against 14.0 µs",
           "NHWC peer row: " + " / ".join(cells))
    bad = os.path.join(tmp, "bad.json")
    with open(bad, "w") as f:
        f.write("{ not json")
    rc, out, err = run([bad])
    expect(rc == 2 and "cannot read" in err, f"unreadable file: rc {rc}, stderr {err!r}")

if failures:
    print("goals_test: FAILED")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("goals_test: all checks passed")
