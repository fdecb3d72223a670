"""Chrome trace-event export of one call: spans named after the kernel functions, timed by
the cost model (the trace's length is the call's closed-form latency)."""

from __future__ import annotations

import json

from perfsim.cli.main import main
from perfsim.cost import predict
from perfsim.report.shapes import plan_call, target_for
from perfsim.report.trace import trace_events

M = 1 << 20


def _spans(doc, name=None):
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and (name is None or e["name"] == name)]


def test_realigned_move_has_pmd_moves_inside_rmap_holds_and_flushes():
    plan = plan_call(target_for("6.18", "x86_64"), "realignable", 64 * M)
    doc = trace_events(plan, "x86_64-generic")
    names = {e["name"] for e in _spans(doc)}
    assert {"mremap", "move_page_tables", "move_normal_pmd", "move_ptes",
            "flush_tlb_mm_range", "rmap lock anon_vma:src (write)"} <= names
    assert len(_spans(doc, "move_normal_pmd")) == 32
    assert len(_spans(doc, "rmap lock anon_vma:src (write)")) == 32
    top = _spans(doc, "mremap")[0]
    assert round(top["dur"] * 1000) == predict(plan, "x86_64-generic").predicted_ns
    for e in _spans(doc):  # every span lies inside the call
        assert e["ts"] >= 0 and e["ts"] + e["dur"] <= top["dur"] + 1e-6
    json.dumps(doc)


def test_ipi_targets_get_their_own_tracks():
    plan = plan_call(target_for("6.18", "x86_64"), "unaligned", 4 * M)
    doc = trace_events(plan, "kvm-host", cpus=3)
    assert _spans(doc, "native_flush_tlb_multi")
    assert {e["tid"] for e in _spans(doc, "flush_tlb_func")} == {1, 2}
    assert not _spans(doc, "rmap lock anon_vma:src (write)")  # need_rmap_locks is false


def test_cli_trace_call(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["report", "--trace-call", "pud:1G", "--kernel", "6.6", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert _spans(doc, "move_normal_pud")
    assert main(["report", "--trace-call", "diagonal:1G"]) == 2
    assert "class" in capsys.readouterr().err
    assert main(["report", "--trace-call", "pud"]) == 2
