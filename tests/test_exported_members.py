"""Pin the public surface: what `api` and `hot` export."""

import tierflow as api
import tierflow.hot as hot


def test_api_exports():
    assert set(api.__all__) >= {
        "Tierflow",
        "workflow",
        "WorkflowContext",
        "RetryPolicy",
        "TierflowError",
        "WorkflowNotFound",
        "WorkflowAlreadyExists",
        "NonDeterminismError",
        "SignalTimeout",
        "WorkflowFailed",
        "StorageError",
        "ManualClock",
        "WorkflowHandle",
        "Status",
        "ReplayResult",
    }
    for name in api.__all__:
        assert hasattr(api, name), name


def test_hot_exports_resolve():
    for name in hot.__all__:
        assert hasattr(hot, name), name


def test_single_exception_root():
    for name in api.__all__:
        obj = getattr(api, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, api.TierflowError) or name == "WorkflowCancelled", name
    assert issubclass(api.WorkflowCancelled, BaseException)
    assert not issubclass(api.WorkflowCancelled, Exception)
    assert issubclass(api.InvalidWorkflowId, ValueError)
