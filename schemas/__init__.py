"""Pandera schemas for what the loader sends to the CallKaro API."""

from schemas.calls import E164, PRIORITY_RANGE, ROW_CHECK_COLUMNS, WINDOW_ERROR, CallRequests

__all__ = ["E164", "PRIORITY_RANGE", "ROW_CHECK_COLUMNS", "WINDOW_ERROR", "CallRequests"]
