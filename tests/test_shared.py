"""Shared use: one cached base model, several sessions pruning it at once."""

import threading

import torch
from conftest import assert_same_state, state_snapshot
from test_app import count

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, model_stats, prune
from pruning.tasks import infer


def test_concurrent_prunes_stay_isolated(mobilenet):
    entry = get_model_entry("mobilenet_v2")
    example = entry.example_inputs()
    inputs = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    snapshot = state_snapshot(mobilenet)
    ratios = [0.2, 0.6, 0.2, 0.6]
    expected = {r: (model_stats(prune(mobilenet, PruneConfig("mobilenet_v2", r)).model, example).params) for r in set(ratios)}

    results: dict[int, tuple[int, torch.Tensor]] = {}
    errors = []
    barrier = threading.Barrier(len(ratios))

    def session(index: int, ratio: float) -> None:
        try:
            barrier.wait()
            result = prune(mobilenet, PruneConfig("mobilenet_v2", ratio))
            results[index] = (model_stats(result.model, example).params, infer(result.model, inputs))
        except Exception as error:  # collected and re-raised below, in the test thread
            errors.append(error)

    threads = [threading.Thread(target=session, args=(i, r)) for i, r in enumerate(ratios)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    for index, ratio in enumerate(ratios):
        assert results[index][0] == expected[ratio]
    # sessions with the same ratio got the same model; different ratios differ
    assert torch.equal(results[0][1], results[2][1])
    assert not torch.equal(results[0][1], results[1][1])
    assert_same_state(mobilenet, snapshot)



def test_two_app_sessions_see_own_numbers():
    from streamlit.testing.v1 import AppTest

    from ui.state import load_base_model

    sessions = []
    for ratio in (0.1, 0.7):
        app = AppTest.from_file("app_entry.py", default_timeout=300)
        app.session_state["sidebar_ratio"] = ratio
        app.run()
        assert not app.exception
        sessions.append(app)
    base = load_base_model("mobilenet_v2")
    snapshot = state_snapshot(base)

    # rerun both after each other's work: each keeps its own ratio and numbers
    for app in sessions:
        app.run()
    low, high = (next(m.value for m in app.metric if m.label == "Parameters") for app in sessions)
    assert count(low) > count(high)
    assert sessions[0].slider(key="sidebar_ratio").value == 0.1
    assert sessions[1].slider(key="sidebar_ratio").value == 0.7
    assert_same_state(load_base_model("mobilenet_v2"), snapshot)
