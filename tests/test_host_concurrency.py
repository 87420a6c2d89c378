"""Twenty concurrent ``host unseal`` runs of one request: exactly one activation."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

from builder.host.request import open_request
from tests import hostkit


def test_twenty_concurrent_unseals_activate_once(tmp_path: Path) -> None:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    req = open_request(
        image.root, now, scope="ssh-emergency", ttl_seconds=600, reason="r", requester="dave"
    )
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "carol")]
    cmd = [
        hostkit.PYTHON,
        "-m",
        "builder",
        "host",
        "unseal",
        "--root",
        str(image.root),
        req.id,
        *approvals,
    ]
    procs = [
        subprocess.Popen(
            cmd, cwd=hostkit.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(20)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    assert len(ok) == 1, results
    assert ok[0][1].startswith("ACTIVE: scope ssh-emergency")
    for code, out, err in results:
        if code != 0:
            assert code == 1 and out == ""
            assert err == (
                f"breakglass: error: request {req.id} is not pending (host is ACTIVE)\n"
                "hint: the window is already open; `breakglass host status` shows it\n"
            )
    events = [
        json.loads(x)
        for x in (image.root / "var/lib/breakglass/audit.jsonl").read_text().splitlines()
    ]
    assert [e["event"] for e in events].count("activated") == 1
    assert [e["event"] for e in events].count("approval-refused") == 19
    v = hostkit.run("host", "audit", "verify", "--root", str(image.root))
    assert v.returncode == 0, v.stderr
