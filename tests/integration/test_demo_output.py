"""scripts/demo.sh's warehouse step, run as the script runs it: one "warehouse initialised" line, no raw JSON."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_warehouse_step_says_it_once_in_words(tmp_path: Path) -> None:
    """Issue 22: the demo printed "warehouse initialised" twice (``db init``, then ``seed`` again) and seed's JSON dict."""
    script = (REPO / "scripts" / "demo.sh").read_text()
    lines = [ln.strip() for ln in script.splitlines() if ln.strip().startswith("spendpred ")]
    assert not [ln for ln in lines if ln.startswith("spendpred db init")]  # seed creates the tables itself
    seed = next(ln for ln in lines if ln.startswith("spendpred seed "))
    assert seed.endswith(">/dev/null")
    env = {**os.environ, "SPENDPRED_HOME": str(tmp_path / "var"), "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
           "DEMO_USERS": "30", "DEMO_DATE": "2024-06-30", "DEMO_SEED": "42"}  # fmt: skip
    done = subprocess.run(["bash", "-c", seed.replace("730", "20")], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # no {"users": ...} dict
    assert done.stderr.count("warehouse initialised") == 1, done.stderr
    assert re.search(r"seeded 30 users, \d+ orders, \d+ events, \d+ reviews", done.stderr), done.stderr
