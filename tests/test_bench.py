"""`ulvm bench`: paths side by side in one process, ratios against the fastest baseline of that process."""
import pytest

from ulvm.report.bench import format_table, run_benchmark


def test_cpu_benchmark_times_the_official_structure_and_ours_against_the_fastest_baseline():
    paths = ["official (4 calls, reference scan)", "reference", "parallel", "chunked"]
    result = run_benchmark("cpu", size=64, repeats=2, paths=paths, progress=lambda line: None)
    rows = {row["path"]: row for row in result["rows"]}
    assert list(rows) == paths and not result["failed"]
    assert all(row["counted"] for row in rows.values())               # every path matches the fp64 reference
    assert rows[paths[0]]["baseline"] and not rows["parallel"]["baseline"]
    # inference: the official fallback is the only baseline here, so every ratio is against it
    assert result["fastest_baseline"]["infer_b1_ms"] == paths[0]
    assert rows[paths[0]]["infer_b1_speedup"] == 1.0
    # training: no baseline trains on the CPU (the reference scan is inference-only there): the first timed row
    assert "train_b8_ms" not in rows[paths[0]] and result["fastest_baseline"]["train_b8_ms"] == "parallel"
    assert "fastest baseline measured in this process" in format_table(result)


def test_the_comparison_models_are_timed_side_by_side_against_ultralight():
    from ulvm.report.bench import compare_models

    result = compare_models("cpu", ["ultralight", "egeunet", "unext_s"], size=32, repeats=1,
                            progress=lambda line: None)
    rows = {row["model"]: row for row in result["rows"]}
    assert list(rows) == ["ultralight", "egeunet", "unext_s"] and result["graph"] is False
    assert rows["ultralight"]["train_b8_vs_ultralight"] == 1.0
    assert all(row["infer_b1_ms"] > 0 and row["train_b8_ms"] > 0 for row in rows.values())
    assert result["code_version"]


def test_interleaved_timing_visits_every_path_once_a_round_in_a_shuffled_order(monkeypatch):
    """`interleaved_ms`: warm-up calls first, then rounds that visit each path once, in an order reshuffled
    every round; a visit is `settle` untimed calls and one timed call, and each median comes from its own."""
    from ulvm import runtime

    clock, calls = [0.0], []
    monkeypatch.setattr(runtime.time, "perf_counter", lambda: clock[0])

    def path(name, ms):
        def call():
            calls.append(name)
            clock[0] += ms / 1e3
        return call

    timed = runtime.interleaved_ms({"a": path("a", 1.0), "b": path("b", 5.0), "c": path("c", 2.0)},
                                   repeats=6, warmup=1, settle=1)
    assert timed == pytest.approx({"a": 1.0, "b": 5.0, "c": 2.0})
    assert calls[:3] == ["a", "b", "c"]                                   # one warm-up call each
    visits = calls[3::2]
    assert calls[3:] == [name for name in visits for _ in range(2)]       # a settling call, then the timed one
    rounds = [visits[3 * i:3 * i + 3] for i in range(6)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds) and len({tuple(r) for r in rounds}) > 1
