"""The HTTP models are the row definition: one field per column, nullability from it."""

from __future__ import annotations

from types import NoneType
from typing import get_args

from tierflow.hot.rows import HISTORY, WORKFLOWS, names
from tierflow.http.models import Event, Workflow


def test_models_have_a_field_per_column_with_its_nullability_and_doc():
    for model, columns in ((Workflow, WORKFLOWS), (Event, HISTORY)):
        assert tuple(model.model_fields) == names(columns)
        for col in columns:
            field = model.model_fields[col.name]
            nullable = NoneType in get_args(field.annotation)
            if col.type != "json":
                assert nullable == (col.nullable or col.null_while_running), col.name
            assert field.description == col.doc
