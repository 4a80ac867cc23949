"""``scripts/benchmark.py --smoke``: the benchmark suite on a tiny model, one round, so it cannot rot.

The full run (VGG16, Keras, several rounds) is done by hand; its table is in BENCHMARKS.md.
"""

import hashlib
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
ROWS = ["a.ort", "a.onnxviz", "b.plain1", "b.onnxviz1", "b.conv1", "b.plain2", "b.onnxviz2", "b.conv2",
        "c.one", "c.all",
        "d.mpl", "d.onnxviz", "e.summary", "e.filters"]
TARGETS = ["beats the naive onnxruntime script: faster", "≤ 1.10× plain inference, batch 1",
           "block1_conv1 ≤ 0.2× all 13 layers", "≥ 10× faster than one axes per map", "`onnxviz summary` ≤ 1.0 s",
           "`onnxviz filters` ≤ 1.0 s"]


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.exists(path) else None


@pytest.mark.slow
def test_smoke_run_prints_every_row_and_writes_only_its_output(tmp_path):
    repo_md = os.path.join(REPO, "BENCHMARKS.md")
    before = _sha(repo_md)
    out_md = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, SCRIPT, "--smoke", "--workdir", str(tmp_path / "work"),
                           "--output", str(out_md)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert set(ROWS) <= rows, set(ROWS) - rows
    assert "a.keras" not in rows and "f.export" not in rows  # they need TensorFlow: full run only
    for target in TARGETS:
        assert target in proc.stdout
    text = out_md.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "<!-- benchmark.py: begin -->" in text
    assert all(f"| {row} |" in text for row in ROWS)
    assert _sha(repo_md) == before  # the repo's BENCHMARKS.md is only written by a full run


def test_report_section_replaces_its_previous_version(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\nintro\n\n## Older section\nkept\n", encoding="utf-8")
    first = f"{benchmark.BEGIN}\none\n{benchmark.END}\n"
    benchmark.write_report(str(md), first)
    benchmark.write_report(str(md), first.replace("one", "two"))
    text = md.read_text(encoding="utf-8")
    assert text.count(benchmark.BEGIN) == 1 and "two" in text and "\none\n" not in text
    assert text.startswith("# Benchmarks\n\nintro\n\n## Older section\nkept\n")
