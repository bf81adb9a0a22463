"""Cross-tier services (tiering job, locator, analytics): not built yet (see the open issues)."""

__all__: list[str] = []
