"""An instance file stays whole while another process opens and closes it.

SQLite keeps a WAL database's ``-wal`` file while any connection has it open,
judged by POSIX locks. Closing *any* descriptor of a file drops all of a
process's POSIX locks on it, so code that opened and closed a database file
SQLite had open (to fsync it) made the next process to close it think it was
the last user and delete the WAL under the live connection: its commits went
to an unlinked file. Found by the three-worker test (tests/hot/test_processes.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tierflow.hot.records import EventRow
from tierflow.hot.spares import SparePool
from tierflow.hot.store import InstanceFile

OTHER_PROCESS = """
import sys
from pathlib import Path
from tierflow.hot.records import EventRow
from tierflow.hot.store import InstanceFile
f = InstanceFile.open(Path(sys.argv[1]))
f.commit(events=[EventRow("signal.received", 2, "go", None, "1")], add_signals=[("go", "1", 2)])
f.close()
"""


@pytest.mark.parametrize("batch", [1, 16], ids=["one-spare", "batch-of-16"])
def test_another_process_closing_a_spare_keeps_its_wal(tmp_path: Path, batch: int) -> None:
    pool = SparePool(tmp_path, "owner", "full", size=2)
    try:
        spares = [pool.make()] if batch == 1 else pool.make_batch(batch)
        f = spares[0]
        row = {
            "workflow_id": "x",
            "run_id": "r",
            "workflow_type": "t",
            "status": "running",
            "parent_workflow_id": None,
            "input": "null",
            "attributes": "{}",
            "created_at": 1,
            "started_at": 1,
        }
        f.deferred = (row, [EventRow("workflow.queued", 1), EventRow("workflow.started", 1)])
        f.commit(sync=False)
        subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(f.path)], check=True, timeout=60)
        assert Path(f"{f.path}-wal").exists()
        f.sync()  # raised "cannot sync ...-wal: No such file" before the fix
        last = f.commit(events=[EventRow("step.started", 3, "s", 1)])
        f.close()
        g = InstanceFile.open(f.path)
        try:
            assert [e[0] for e in g.read_events()] == [1, 2, 3, 4] == list(range(1, last + 1))
        finally:
            g.close()
        for other in spares[1:]:
            other.close()
    finally:
        pool.close()
