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


def _documented_exceptions() -> set[str]:
    """The class names drawn in the tree of ``hot/errors.py``'s module docstring."""
    import re

    import tierflow.hot.errors as errors

    assert errors.__doc__ is not None
    tree = errors.__doc__.split("::", 1)[1].split("\n\nCancellation", 1)[0]
    roots = set(re.findall(r"^    (\w+)$", tree, re.M))
    return roots | set(re.findall(r"[├└]── (\w+)", tree))


def test_every_exported_exception_is_in_the_documented_tree():
    import tierflow.hot.errors as errors
    import tierflow.http as http
    from tierflow.tiering.sql import QueryTimeout
    from tierflow.warm.storage import ObjectNotFound

    exported = {
        name
        for module in (api, errors)
        for name in module.__all__
        if isinstance(getattr(module, name), type)
        and issubclass(getattr(module, name), BaseException)
    }
    # Raised to callers from the lower packages.
    exported |= {QueryTimeout.__name__, ObjectNotFound.__name__}
    exported |= {
        name
        for name in http.__all__
        if isinstance(getattr(http, name), type) and issubclass(getattr(http, name), BaseException)
    }
    documented = _documented_exceptions()
    assert {"TierflowError", "StorageError", "WorkflowCancelled"} <= documented
    assert exported - documented == set()
    # The rule: a name ends in "Error", or the tree documents it.
    assert {n for n in exported if not n.endswith("Error")} <= documented


def test_no_public_tierflow_method_returns_a_dict():
    import inspect

    for name, member in inspect.getmembers(api.Tierflow, inspect.isfunction):
        if not name.startswith("_"):
            returns = str(inspect.signature(member).return_annotation)
            assert "dict[" not in returns, (name, returns)
