"""The startup check of the Tornado internals chatfleet relies on (internals/)."""

from __future__ import annotations

import pytest
import tornado.iostream
import tornado.web

import internals


def test_this_tornado_has_every_internal_used() -> None:
    assert internals.missing() == []
    internals.check()


def test_a_missing_internal_is_named_and_stops_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(tornado.iostream.BaseIOStream, "writing")

    def clear_without_headers(self: tornado.web.RequestHandler) -> None:
        pass

    monkeypatch.setattr(tornado.web.RequestHandler, "clear", clear_without_headers)
    assert internals.missing() == ["IOStream.writing()", "RequestHandler._headers"]
    with pytest.raises(SystemExit) as stopped:
        internals.check()
    assert "IOStream.writing()" in str(stopped.value)
