"""Device-time summary of a profiler trace."""

from __future__ import annotations

import gzip
import json

import pytest

from asrth_jax import profile_summary


def _trace(tmp_path, events):
    run = tmp_path / "plugins" / "profile" / "run1"
    run.mkdir(parents=True)
    with gzip.open(run / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    return tmp_path


def _meta(pid, name):
    return {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}}


def _op(pid, name, dur):
    return {"ph": "X", "pid": pid, "tid": 1, "ts": 0, "dur": dur, "name": name}


def test_device_events_are_totalled_by_kernel_and_kind(tmp_path):
    events = [_meta(1, "/host:CPU"), _meta(7, "/device:GPU:0"),
              _op(1, "PjitFunction(jit(step))", 999.0),  # host span: not device time
              _op(7, "sm90_xmma_fprop_implicit_gemm_bf16", 60.0),
              _op(7, "sm90_xmma_fprop_implicit_gemm_bf16", 20.0),
              _op(7, "loop_add_fusion", 15.0), _op(7, "cutlass_gemm_bf16", 5.0)]
    summary = profile_summary.summarize_trace(str(_trace(tmp_path, events)), top=2)
    assert summary["where"] == "device"
    assert summary["total_us"] == pytest.approx(100.0)
    assert summary["by_category"]["convolution"]["share"] == pytest.approx(0.8)
    assert summary["by_category"]["fusion"]["us"] == pytest.approx(15.0)
    assert summary["by_category"]["matmul"]["us"] == pytest.approx(5.0)
    top = summary["top"]
    assert [t["name"] for t in top] == ["sm90_xmma_fprop_implicit_gemm_bf16", "loop_add_fusion"]
    assert top[0]["count"] == 2
    assert "convolution" in profile_summary.format_summary(summary)


def test_cpu_only_trace_uses_host_ops_without_wrappers(tmp_path):
    events = [_meta(1, "/host:CPU"), _op(1, "PjitFunction(jit(step))", 500.0),
              _op(1, "$profiler.py:12 trace", 400.0), _op(1, "convolution.3", 30.0),
              _op(1, "copy_fusion.1", 10.0)]
    summary = profile_summary.summarize_trace(str(_trace(tmp_path, events)))
    assert summary["where"] == "host"
    assert summary["total_us"] == pytest.approx(40.0)
    assert summary["by_category"]["copy/transpose"]["us"] == pytest.approx(10.0)


def test_missing_trace_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no profiler trace"):
        profile_summary.main([str(tmp_path)])
