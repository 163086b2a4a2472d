"""Readers and writers stream: memory does not grow with the file."""

import json
import subprocess
import sys

from conftest import FIXTURES

PEAK_RSS = """
import resource, sys, curate
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = curate.convert([sys.argv[1]], sys.argv[2], "llava", "llava")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(report.written, baseline, peak)
"""


def test_converting_a_large_single_line_array_uses_little_memory(tmp_path):
    records = json.loads((FIXTURES / "llava_small.json").read_text())
    big = tmp_path / "big.json"
    with open(big, "w") as f:  # about 60 MB on one line, like llava_v1_5_mix665k.json
        f.write("[")
        count = 0
        for block in range(3000):
            for i, record in enumerate(records):
                record = dict(record, id=f"{record['id']}_{block}", pad="x" * 2000)
                f.write(("," if count else "") + json.dumps(record))
                count += 1
        f.write("]")
    size_mb = big.stat().st_size / 2**20
    assert size_mb > 55
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(big), str(tmp_path / "out.json")],
                            capture_output=True, text=True, check=True)
    written, baseline_kb, peak_kb = map(int, result.stdout.split())
    assert written == count
    growth_mb = (peak_kb - baseline_kb) / 1024
    # json.load alone would need several times the file size; streaming needs chunks.
    assert growth_mb < 40, f"memory grew by {growth_mb:.0f} MB for a {size_mb:.0f} MB file"
