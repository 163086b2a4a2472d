"""One partitioned index built and searched for every pair >= 0.8 over index_scale.py's planted
vectors, with whichever curate the interpreter imports: run it with two checkouts' interpreters
in turn to compare them in one run (options as key=value, e.g. partition_probe=32).

    for i in 1 2; do .venv/bin/python bench/partitioned_once.py 200000; /work/main/.venv/bin/python bench/partitioned_once.py 200000; done
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from index_scale import planted  # noqa: E402
from common import MemoryWatch  # noqa: E402
import curate  # noqa: E402
from curate.registry import get_registry  # noqa: E402
n = int(sys.argv[1])
options = dict(a.split("=") for a in sys.argv[2:])
options = {k: (int(v) if v.isdigit() else v) for k, v in options.items()}
vectors = planted(n)
with MemoryWatch() as w:
    index = get_registry().get("index", "partitioned").new(768, n, **options)
    index.add(vectors)
    rows, ids, sims = index.range_search(vectors, 0.8)
print(f"{curate.__file__.split('/core')[0]} n={n} {options} wall {w.wall:.1f} cpu {w.cpu:.1f} "
      f"pairs {int((rows != ids).sum())} peak {w.peak_mb:.0f} MB anon {w.anon_mb:.0f} MB")
