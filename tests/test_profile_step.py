"""experiments/bench/profile_step.py: the trace is read back into per-op
times that add up, async ops get their real end, and a tiny model's step is
attributed to the model ops it came from."""

import gzip
import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / "experiments" / "bench" / "profile_step.py"
spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
profile_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


def write_trace(directory, events):
    run = directory / "plugins" / "profile" / "run"
    run.mkdir(parents=True)
    metadata = [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": tid, "args": {"name": name}}
        for tid, name in ((1, "python"), (2, "tf_XLAEigen/1"), (3, "tf_XLAEigen/2"))
    ]
    with gzip.open(run / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": metadata + events}, f)


def op(name, ts, dur, tid=2):
    return {"ph": "X", "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}


def test_async_ops_end_at_their_marker_and_host_events_are_not_ops(tmp_path):
    write_trace(
        tmp_path,
        [
            op("$bench", 0, 1000, tid=1),  # The Python loop.
            op("ThunkExecutor::Execute", 0, 900),  # Encloses the ops.
            op("dot.7", 10, 2),  # Eigen's dot: returns at once ...
            op("ynn_fusion.3", 20, 50, tid=3),
            op("end: dot.7", 110, 0),  # ... and ends here.
            op("end: ynn_fusion.3", 300, 0),  # A synchronous op's late marker.
        ],
    )
    events = {e["name"]: e for e in profile_step.thunk_events(str(tmp_path))}
    assert set(events) == {"dot.7", "ynn_fusion.3"}
    assert events["dot.7"]["dur"] == 100 and events["ynn_fusion.3"]["dur"] == 50


def test_matmul_flops_are_read_from_fusions_and_eigen_dots():
    hlo = """
%fused_computation.1 (p0: f32[4,8], p1: f32[8,16]) -> f32[4,16] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,16]{1,0} parameter(1)
  ROOT %dot.2 = f32[4,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (x: f32[4,8], w: f32[8,16]) -> f32[8,8] {
  %x = f32[4,8]{1,0} parameter(0)
  %w = f32[8,16]{1,0} parameter(1)
  %ynn_fusion.1 = f32[4,16]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation.1
  %add_fusion = f32[4,16]{1,0} fusion(%ynn_fusion.1), kind=kLoop, calls=%fused_computation.2
  ROOT %dot.5 = f32[8,8]{1,0} dot(%x, %x), lhs_contracting_dims={0}, rhs_contracting_dims={0}
}
"""
    # 2 · output elements · contracted size; x^T·x contracts the 4 rows.
    assert profile_step.op_flops(hlo) == {"ynn_fusion.1": 2 * 4 * 16 * 8, "dot.5": 2 * 8 * 8 * 4}


def test_shared_time_adds_up_to_the_busy_time():
    events = [{"ts": 0, "dur": 100}, {"ts": 50, "dur": 100}, {"ts": 200, "dur": 10}]
    span, idle, overlap, shares = profile_step.shared_time(events)
    assert (span, idle, overlap) == (210, 50, 50)
    assert shares == [75, 75, 10]  # The 50 µs together are split in half.
    assert sum(shares) == span - idle


@pytest.mark.parametrize(
    "name, kind",
    [
        ("ynn_fusion.12", "dot"),
        ("dot.217", "dot"),
        ("copy_bitcast_fusion.4", "copy"),
        ("transpose_copy_fusion", "copy"),
        ("multiply_bitcast_fusion.2", "elementwise"),  # GELU, despite "bitcast".
        ("reduce_sum_fusion", "reduce"),
        ("ffi_call.132", "custom-call"),  # The CPU attention kernel's calls.
        ("custom-call.3", "custom-call"),
    ],
)
def test_kind_reads_the_op_name(name, kind):
    assert profile_step.kind(name) == kind


def test_a_tiny_train_step_is_attributed_to_model_ops(capsys):
    profile_step.main(
        ["--model=testing", "--resolution=16", "--batch=8", "--mode=train"]
        + ["--steps=1", "--warmup=1", "--top=10000"]  # Every op: tiny ones rank at random.
    )
    printed = capsys.readouterr().out
    assert "ms a step untraced" in printed and "by kind: " in printed
    by_source = printed.split("by source op")[1]
    assert "MlpBlock_0/Dense_0/dot_general" in by_source  # The forward's matmul ...
    assert "transpose(jvp(VisionTransformer))" in by_source  # ... and the backward's.
