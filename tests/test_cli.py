"""The ``diffpose`` command's own behaviour (each stage's is tested with the stage)."""

from __future__ import annotations

import subprocess
import sys


def test_a_reader_that_leaves_early_gets_no_error():
    """`diffpose ... | head -1`: the closed pipe is the reader's choice, not an error (exit 0, no
    "Broken pipe" message, no traceback)."""
    script = (
        "import sys, diffpose.stages.validate as v\n"
        "def main(args):\n"
        "    for i in range(200000):\n"
        "        print('line', i)\n"
        "v.main = main\n"
        "from diffpose.cli import main as cli\n"
        "sys.exit(cli(['validate', 'x']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and first == b"line 0\n"
    assert "Broken pipe" not in err and "Traceback" not in err, err
